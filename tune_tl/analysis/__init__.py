"""Looking at a search: its tables in pandas (``frame``), the report, retrain and predict."""

from tune_tl.analysis.frame import RANKED_STATUSES, Results, best_trial, leaderboard, load_results, param_summary

__all__ = ["RANKED_STATUSES", "Results", "best_trial", "leaderboard", "load_results", "param_summary"]
