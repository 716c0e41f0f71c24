"""Running a search on Ray Tune: the driver (``run``), resume, the trainable, schedulers and the Optuna sampler."""

from tune_tl.search.run import METRIC, MODE, SearchOptions, SearchSummary, run_search

__all__ = ["METRIC", "MODE", "SearchOptions", "SearchSummary", "run_search"]
