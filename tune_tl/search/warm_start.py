"""Warm starts: the finished trials of earlier searches on the same data seed a new search's Optuna study.

TPE then starts from what is known instead of from random draws. An earlier trial is added only when
the new space could have produced its configuration: every parameter the new space samples must lie in
its distribution, and every value the new space fixes must be the one the trial ran with (a trial at
32 px says little about a search fixed at 64 px). Completed trials enter as COMPLETE with their best
val accuracy, pruned ones as PRUNED with their per-epoch accuracies (as :mod:`tune_tl.search.sampler`
records its own); diverged and failed trials carry no value and are left out.

"The same data" is checked, not assumed: each search records a fingerprint of its prepared data in
``search.json`` (class names, the train/val labels in split order, and a hash of the pixels at each
resolution), and a warm start is refused unless the fingerprints agree on the classes, the split and
the pixels at every resolution both searches prepared.

    >>> trials = warm_trials(["results/earlier"], spec, fn, fingerprint)  # before the Tuner starts
    >>> seed_study(study_file, "new-search", trials)
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tune_tl.compat import distribution_contains
from tune_tl.config.params import PARAMS
from tune_tl.errors import TuneTLError
from tune_tl.search.sampler import storage_url
from tune_tl.store.search_run import SearchRun

log = logging.getLogger(__name__)


def check_same_data(mine: dict[str, Any], theirs: dict[str, Any] | None, where: str) -> None:
    """Raise unless ``theirs`` (an earlier search's fingerprint) describes the same data as ``mine``."""
    if not theirs:
        raise TuneTLError(f"--warm-start {where}: its search.json records no data fingerprint (a search from an "
                          "older tune_tl); warm-start only from searches that record one")
    if theirs.get("classes") != mine["classes"]:
        raise TuneTLError(f"--warm-start {where}: its classes {theirs.get('classes')} differ from this data's "
                          f"{mine['classes']}; warm-start only from a search on the same data")
    if theirs.get("split") != mine["split"]:
        raise TuneTLError(f"--warm-start {where}: its train/val split differs from this search's (other images, "
                          "data.val_fraction or seed); warm-start only from a search on the same data and split")
    common = sorted(set(theirs.get("images", {})) & set(mine["images"]), key=int)
    if not common:
        raise TuneTLError(f"--warm-start {where}: no resolution in common (it prepared {sorted(theirs.get('images', {}), key=int)} px, "
                          f"this search {sorted(mine['images'], key=int)} px), so its images cannot be compared; "
                          "warm-start from a search that shares a resolution")
    differ = [r for r in common if theirs["images"][r] != mine["images"][r]]
    if differ:
        raise TuneTLError(f"--warm-start {where}: its images differ from this data's at {', '.join(differ)} px; "
                          "warm-start only from a search on the same data")


def warm_trials(dirs: Sequence[str], fingerprint: dict[str, Any], space: Callable) -> list[FrozenTrial]:
    """The earlier searches' finished trials that ``space`` (the new define-by-run function) could have sampled.

    Raises:
        TuneTLError: A folder that is no search, or a search on other data.
    """
    out: list[FrozenTrial] = []
    for where in dirs:
        run = SearchRun.open(where, require_metadata=True)
        check_same_data(fingerprint, run.data_fingerprint, where)
        # run.backbone, not run.spec: a warm start reads only the record and the tables, never an earlier search's code
        added = frozen_trials(run.trials(), run.epochs(), space, run.backbone.names[0], str(run.root))
        log.info("warm start: %d of %d trials of %s fit this space", len(added), len(run.trials()), run.root)
        out.extend(added)
    return out


def frozen_trials(trials, epochs, space: Callable, default_backbone: str, source: str) -> list[FrozenTrial]:
    """Optuna trials for the rows of an earlier ``trials`` table that ``space`` could have produced."""
    out = []
    for row in trials.itertuples(index=False):
        row = row._asdict()
        if row["status"] not in ("completed", "pruned") or row.get("probe") == True:  # noqa: E712 (a numpy bool)
            continue  # no honest value; or a probe, whose head scikit-learn fitted (the new search probes for itself)
        fitted = _fit(_config_of(row, default_backbone), space)
        if fitted is None:
            continue
        params, distributions = fitted
        curve = epochs[epochs["trial_id"] == row["trial_id"]].sort_values("epoch")
        steps = {int(e): float(v) for e, v in zip(curve["epoch"], curve["val_acc"], strict=True) if math.isfinite(v)}
        completed = row["status"] == "completed"
        out.append(optuna.trial.create_trial(
            state=TrialState.COMPLETE if completed else TrialState.PRUNED,
            value=float(row["best_val_acc"]) if completed else None,
            params=params, distributions=distributions, intermediate_values=steps,
            user_attrs={"tune_tl_status": row["status"], "ray_trial_id": row["trial_id"], "warm_start_from": source},
        ))
    return out


def seed_study(study_file: Path, study_name: str, trials: list[FrozenTrial]) -> None:
    """Create the new search's study holding ``trials``; the searcher then loads it (``load_if_exists``)."""
    study = optuna.create_study(storage=storage_url(study_file), study_name=study_name, direction="maximize", load_if_exists=True)
    study.add_trials(trials)
    log.info("the Optuna study begins with %d finished trials (probes, earlier searches)", len(trials))


def _config_of(row: dict[str, Any], default_backbone: str) -> dict[str, Any]:
    """The values a trial ran with: its recorded parameters, registry defaults for the ones it did not set."""
    config = {name: p.default for name, p in PARAMS.items() if p.default is not None}
    config["backbone"] = default_backbone
    for name, param in PARAMS.items():
        value = row.get(name)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            config[name] = param.type(value)
    return config


def _fit(config: dict[str, Any], space: Callable) -> tuple[dict, dict] | None:
    """Replay ``space`` on ``config``: (params, distributions) when every draw and constant agrees, else None."""
    trial = optuna.trial.FixedTrial(config)
    try:
        with warnings.catch_warnings():  # out-of-range values are checked below, quietly
            warnings.simplefilter("ignore", UserWarning)
            constants = space(trial) or {}
    except (ValueError, KeyError):  # the space samples a parameter the trial never had
        return None
    for name, dist in trial.distributions.items():
        try:
            if not distribution_contains(dist, config[name]):
                return None
        except ValueError:  # a categorical value that is not among the choices
            return None
    if any(config.get(name) != value for name, value in constants.items()):
        return None
    return {name: config[name] for name in trial.distributions}, dict(trial.distributions)
