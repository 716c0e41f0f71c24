"""tune_tl: hyperparameter search over transfer learning (Ray Tune + Optuna + ASHA → Parquet).

The public names below are imported on first use (PEP 562): the library pulls in torch, Ray and Optuna,
and ``import tune_tl.cli`` (every ``tune-tl`` command, ``--help`` included) must not wait for all of them.
"""

import importlib

_PUBLIC = {
    "Results": "tune_tl.analysis.frame",
    "best_trial": "tune_tl.analysis.frame",
    "leaderboard": "tune_tl.analysis.frame",
    "load_results": "tune_tl.analysis.frame",
    "param_summary": "tune_tl.analysis.frame",
    "SearchSpec": "tune_tl.config.spec",
    "load_space": "tune_tl.config.space",
    "TuneTLError": "tune_tl.errors",
    "SearchOptions": "tune_tl.search.options",
    "SearchSummary": "tune_tl.search.summary",
    "run_search": "tune_tl.search.run",
    "resume_search": "tune_tl.search.resume",
}
__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'tune_tl' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_PUBLIC])
