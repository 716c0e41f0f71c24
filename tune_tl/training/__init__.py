"""Ray-free training: the recipe a config stands for (``recipe``) and the loop that runs it (``loop``)."""

from tune_tl.training.loop import EpochMetrics, FitConfig, fit
from tune_tl.training.recipe import TrialContext, build_model, fit_config

__all__ = ["EpochMetrics", "FitConfig", "TrialContext", "build_model", "fit", "fit_config"]
