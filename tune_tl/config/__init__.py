"""What a search may vary and how it is bounded: the space file (``space``) and each parameter (``params``)."""

from tune_tl.config.params import PARAMS, Param, TrialConfig
from tune_tl.config.space import BackboneSpec, BudgetSpec, DataSpec, SearchSpec, load_space

__all__ = ["PARAMS", "BackboneSpec", "BudgetSpec", "DataSpec", "Param", "SearchSpec", "TrialConfig", "load_space"]
