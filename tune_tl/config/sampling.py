"""A space as an Optuna define-by-run function: what Ray's ``OptunaSearch`` calls for every new trial.

Module-level functions with the space bound by ``functools.partial``, so Ray can pickle them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tune_tl.config.distributions import Choice, Fixed, ParamSpec
from tune_tl.config.params import PARAMS, is_active


def sample_per_backbone(spaces: Mapping[str, tuple[ParamSpec, ...]], trial) -> dict[str, Any]:
    """Optuna define-by-run over backbones: ``backbone`` first (a choice when there are several), then its sub-space.

    The backbone is returned as a constant when it is fixed, so every trial's config (and the trials
    table's ``backbone`` column) names it.
    """
    if len(spaces) == 1:
        (name, params), = spaces.items()
        return {"backbone": name, **sample_params(params, trial)}
    name = trial.suggest_categorical("backbone", list(spaces))
    return sample_params(spaces[name], trial)


def sample_backbone(names: tuple[str, ...], space_fn: Callable, trial) -> dict[str, Any] | None:
    """A Python space under a list of backbones: the backbone is sampled first, then ``space(trial)``."""
    trial.suggest_categorical("backbone", list(names))
    return space_fn(trial)


def sample_params(params: tuple[ParamSpec, ...], trial) -> dict[str, Any]:
    """Suggest the active parameters in registry order (a conditional one after its parent); return fixed ones as constants."""
    chosen: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    for p in params:
        if not is_active(p.name, chosen):
            continue
        d = p.dist
        if isinstance(d, Fixed):
            chosen[p.name] = constants[p.name] = d.value
        elif isinstance(d, Choice):
            chosen[p.name] = trial.suggest_categorical(p.name, list(d.values))
        elif PARAMS[p.name].type is int:
            chosen[p.name] = trial.suggest_int(p.name, d.low, d.high, log=d.log, step=d.step or 1)
        else:
            chosen[p.name] = trial.suggest_float(p.name, d.low, d.high, log=d.log, step=d.step)
    return constants
