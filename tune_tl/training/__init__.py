"""Ray-free training: what trials share (``context``), the recipe a config stands for (``recipe``) and the loop that runs it (``loop``)."""

from tune_tl.training.context import PreparedSearch, TrialContext, prepare_context
from tune_tl.training.loop import EpochMetrics, FitConfig, fit
from tune_tl.training.recipe import build_model, build_trial, fit_config

__all__ = ["EpochMetrics", "FitConfig", "PreparedSearch", "TrialContext", "build_model", "build_trial", "fit", "fit_config",
           "prepare_context"]
