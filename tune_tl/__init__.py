"""tune_tl: hyperparameter search over transfer learning (Ray Tune + Optuna + ASHA → Parquet).

The public names below are imported on first use (PEP 562): the library pulls in torch, Ray and Optuna,
and ``import tune_tl.cli`` (every ``tune-tl`` command, ``--help`` included) must not wait for all of them.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy names below are, for type checkers and the API docs
    from tune_tl.analysis.frame import Results, best_trial, leaderboard, load_results, param_summary
    from tune_tl.config.space import load_space
    from tune_tl.config.spec import SearchSpec
    from tune_tl.errors import TuneTLError
    from tune_tl.models.registry import register_backbone
    from tune_tl.search.options import SearchOptions
    from tune_tl.search.resume import resume_search
    from tune_tl.search.run import run_search
    from tune_tl.search.summary import SearchSummary

_PUBLIC = {
    "Results": "tune_tl.analysis.frame",
    "best_trial": "tune_tl.analysis.frame",
    "leaderboard": "tune_tl.analysis.frame",
    "load_results": "tune_tl.analysis.frame",
    "param_summary": "tune_tl.analysis.frame",
    "SearchSpec": "tune_tl.config.spec",
    "load_space": "tune_tl.config.space",
    "TuneTLError": "tune_tl.errors",
    "register_backbone": "tune_tl.models.registry",
    "SearchOptions": "tune_tl.search.options",
    "SearchSummary": "tune_tl.search.summary",
    "run_search": "tune_tl.search.run",
    "resume_search": "tune_tl.search.resume",
}
__all__ = ["Results", "SearchOptions", "SearchSpec", "SearchSummary", "TuneTLError", "best_trial", "leaderboard",
           "load_results", "load_space", "param_summary", "register_backbone", "resume_search", "run_search"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'tune_tl' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_PUBLIC])
