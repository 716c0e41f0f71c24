"""What a search may vary and how it is bounded.

``params`` (every hyperparameter: type, default, bounds, when it applies), ``distributions`` (a fixed
value, a choice or a range, and the symbolic ``all``/``last``/``native``), ``spec`` (the validated
``SearchSpec``), ``sampling`` (the space as an Optuna define-by-run function), ``space`` (reading space
files) and ``shipped`` (the spaces inside the package).
"""

from tune_tl.config.distributions import Choice, Fixed, ParamSpec, Range
from tune_tl.config.params import PARAMS, Param, TrialConfig
from tune_tl.config.shipped import shipped_space, shipped_spaces
from tune_tl.config.space import load_space, parse_settings, parse_space_text
from tune_tl.config.spec import BackboneSpec, BudgetSpec, DataSpec, SearchSpec, SelectionSpec, with_budget

__all__ = [
    "PARAMS",
    "BackboneSpec",
    "BudgetSpec",
    "Choice",
    "DataSpec",
    "Fixed",
    "Param",
    "ParamSpec",
    "Range",
    "SearchSpec",
    "SelectionSpec",
    "TrialConfig",
    "load_space",
    "parse_settings",
    "parse_space_text",
    "shipped_space",
    "shipped_spaces",
    "with_budget",
]
