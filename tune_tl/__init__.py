"""tune_tl: hyperparameter search over transfer learning (Ray Tune + Optuna + ASHA → Parquet)."""

from tune_tl.analysis.frame import Results, best_trial, leaderboard, load_results, param_summary
from tune_tl.errors import TuneTLError
from tune_tl.search.resume import resume_search
from tune_tl.search.run import SearchOptions, SearchSummary, run_search
from tune_tl.config.space import SearchSpec, load_space

__all__ = [
    "Results",
    "SearchOptions",
    "SearchSpec",
    "SearchSummary",
    "TuneTLError",
    "best_trial",
    "leaderboard",
    "load_results",
    "load_space",
    "param_summary",
    "resume_search",
    "run_search",
]
__version__ = "0.1.0"
