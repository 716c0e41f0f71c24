"""Stage 0 of a search: a linear probe per backbone, in seconds, before any fine-tune.

On a few hundred to a few thousand photos, a convex head on the frozen pooled features of the right
backbone at its native resolution is the strongest cheap answer, and the bar every later trial must clear.
So before the Tuner starts, the driver measures each candidate backbone once (``training.linear_probe``):
pooled features (kept in the search's feature cache, where head-only trials find them), LogME, and a probe
fitted by scikit-learn. Each probe is a real trial of the search:

- a row in ``trials`` and in ``epochs`` (``probe`` = true, ``phase`` = probe, one epoch: its seconds are the
  feature extraction plus the fit), under the id ``probe-<backbone>-<resolution>``;
- a checkpoint (backbone + linear head) in ``<search>/<trial id>/``, so ``tune-tl export`` writes it as a model
  folder and ``tune-tl predict`` reproduces its val accuracy;
- a COMPLETE trial in the Optuna study holding only its backbone and resolution (where the space samples
  them), so TPE starts knowing which backbones fit the data;
- a head that fine-tunes with ``head_init: probe`` at the same backbone and resolution start from (kept in
  ``<search>/probe_heads.pt``, ``SearchRun.probe_heads``, so ``tune-tl resume`` gives trials the same heads).

A probe runs at the backbone's native resolution when the space can sample it, else at the largest
resolution the space allows for that backbone. Cheapest backbone first: the first answer comes soonest.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass

import optuna
import pandas as pd
import torch
from optuna.trial import FrozenTrial, TrialState

from tune_tl.compat import distribution_contains
from tune_tl.config.params import PARAMS, TrialConfig
from tune_tl.search.plan import SearchPlan
from tune_tl.search.rank import ranking_row, ranking_table, select_backbones
from tune_tl.search.textbook import fit_to_space
from tune_tl.store.results import epoch_row, trial_row, write_table_atomic
from tune_tl.store.schema import EPOCH_SCHEMA, TRIAL_SCHEMA
from tune_tl.store.search_run import SearchRun
from tune_tl.store.trial_record import TrialRecord
from tune_tl.training.context import PreparedSearch
from tune_tl.training.linear_probe import ProbeMeasurement, measure_probe
from tune_tl.training.recipe import build_network

log = logging.getLogger(__name__)

#: The frozen-backbone config a probe stands for in the tables (its head is fitted by scikit-learn, not by these).
PROBE_CONFIG = {"freeze_policy": "head_only", "head": "linear", "head_init": "probe", "lp_epochs": 0}
#: What a probe tells the study: how well a backbone at a resolution fits the data. Not its frozen policy: a TPE
#: that learnt "freeze every block" from a probe would spend trials training, with AdamW, the head stage 0 fitted exactly.
PROBE_PARAMS = ("backbone", "resolution")


@dataclass(frozen=True)
class Probe:
    """One stage-0 probe: which backbone and resolution, and what it measured."""

    trial_id: str
    backbone: str
    resolution: int
    logme: float
    val_acc: float
    C: float
    seconds: float
    #: The trial config it stands for, in the space's own terms (a frozen backbone; head fitted by scikit-learn).
    config: TrialConfig

    def record(self) -> dict:
        """What ``search.json`` keeps of it (under ``probes``)."""
        return {k: v for k, v in asdict(self).items() if k != "config"}


def probe_id(backbone: str, resolution: int) -> str:
    return f"probe-{backbone.replace('/', '_')}-{resolution}"


def probe_plan(plan: SearchPlan, prepared: PreparedSearch) -> list[tuple[str, int]]:
    """``(backbone, resolution)`` of each probe to run, cheapest first (resolution, then parameter count)."""
    chosen = []
    for name, backbone in plan.backbones.items():
        allowed = plan.allowed_resolutions(name)
        chosen.append((name, backbone.native_size if backbone.native_size in allowed else max(allowed)))
    params = {name: sum(p.numel() for p in prepared.backbones[name].features.parameters()) for name in plan.backbones}
    return sorted(chosen, key=lambda p: (p[1], params[p[0]]))


def run_probes(plan: SearchPlan, prepared: PreparedSearch, run: SearchRun, cache: str | None, deadline: float | None = None) -> list[Probe]:
    """Measure every planned probe, record each as a finished trial of ``run`` as it ends, and return them.

    Stops before a probe when ``deadline`` (a ``time.monotonic()`` value: the time budget) has passed.
    """
    probes: list[Probe] = []
    heads: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
    spec = plan.spec
    for name, resolution in probe_plan(plan, prepared):
        if deadline is not None and time.monotonic() >= deadline:
            log.info("time budget: no time left for the probe of %s", name)
            break
        split = prepared.context.data.splits[resolution]
        started = time.time()
        measured = measure_probe(prepared.backbones[name], split, prepared.context.data.num_classes, spec.seed, cache)
        config = probe_config(plan, name, resolution)
        probe = Probe(probe_id(name, resolution), name, resolution, measured.logme, measured.val_acc, measured.probe.C, measured.seconds,
                      config)
        _record(run, prepared, probe, measured, started)
        heads[(name, resolution)] = tuple(torch.from_numpy(a) for a in (measured.probe.weight, measured.probe.bias))
        run.save_probe_heads(heads)
        best = max(probes + [probe], key=lambda p: p.val_acc)
        probes.append(probe)
        log.info("probe %s at %d px: val_acc %.4f (LogME %.3f, C %.3g) in %.0f s%s", name, resolution, probe.val_acc, probe.logme,
                 probe.C, probe.seconds, " - best so far" if best is probe else "")
    return probes


def ranking(probes: list[Probe], prepared: PreparedSearch) -> pd.DataFrame:
    """The probes as the ranking table of ``tune-tl rank`` (``backbone``, ``logme``, ``probe_acc``, ``seconds``, ``params``)."""
    return ranking_table([ranking_row(p.backbone, prepared.backbones[p.backbone], p.logme, p.val_acc, p.seconds) for p in probes])


def ranked_plan(plan: SearchPlan, prepared: PreparedSearch, table: pd.DataFrame) -> tuple[SearchPlan, PreparedSearch]:
    """``plan`` with its backbones ordered by ``table`` (best ``probe_acc`` first, ties: higher LogME), so the textbook
    start goes to the first, or only the ``backbone_selection.top`` best by its score; ``prepared`` keeps the same ones."""
    spec = plan.spec
    if spec.backbone_selection is not None:
        spec = select_backbones(spec, table)
    elif spec.backbone.is_choice:
        best_first = table.sort_values(["probe_acc", "logme"], ascending=False, kind="stable")["backbone"].tolist()
        names = tuple(dict.fromkeys(best_first + list(spec.backbone.names)))
        spec = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, name=names))
    return plan.keep(spec), prepared.keep(spec.backbone.names)


def study_trials(probes: list[Probe], space) -> list[FrozenTrial]:
    """The probes as COMPLETE Optuna trials with only :data:`PROBE_PARAMS` among the parameters ``space`` samples:
    TPE learns which backbones and sizes fit, nothing about freezing or learning rates. A space that samples
    neither gets none."""
    out = []
    for probe in probes:
        replay = optuna.trial.FixedTrial(_config_values(probe.config))
        with warnings.catch_warnings():  # values of parameters a probe does not use may lie outside the space: dropped below
            warnings.simplefilter("ignore", UserWarning)
            space(replay)
        dists = {n: d for n, d in replay.distributions.items() if n in PROBE_PARAMS}
        params = {n: replay.params[n] for n in dists}
        if not dists or not all(distribution_contains(d, params[n]) for n, d in dists.items()):
            continue  # the space could not have produced this probe: it stays out of the study
        out.append(optuna.trial.create_trial(state=TrialState.COMPLETE, value=probe.val_acc, params=params, distributions=dists,
                                             intermediate_values={1: probe.val_acc},
                                             user_attrs={"tune_tl_status": "completed", "ray_trial_id": probe.trial_id, "probe": True}))
    return out


def _config_values(config: TrialConfig) -> dict:
    """Every parameter a space may ask a replay for: the probe's values, registry defaults for the rest."""
    defaults = {name: p.default for name, p in PARAMS.items() if p.default is not None}
    return {**defaults, **{k: v for k, v in config.to_dict().items() if v is not None}}


def probe_config(plan: SearchPlan, backbone: str, resolution: int) -> TrialConfig:
    """The config a probe stands for: a frozen backbone in the space's terms (``head_only``, or ``prefix`` with every
    block frozen when the space has no ``head_only``), a linear head, at ``backbone`` and ``resolution``."""
    resolved = plan.backbones[backbone]
    frozen = fit_to_space({"freeze_policy": "head_only"}, resolved.distributions, resolved.num_blocks) or {"freeze_policy": "head_only"}
    return TrialConfig.from_dict({**PROBE_CONFIG, **frozen, "backbone": backbone, "resolution": resolution})


def _record(run: SearchRun, prepared: PreparedSearch, probe: Probe, measured: ProbeMeasurement, started: float) -> None:
    """The probe's checkpoint, then its ``epochs`` and ``trials`` rows (a trial row means its checkpoint exists)."""
    config = probe.config
    model = build_network(config, prepared.backbones[probe.backbone], prepared.context.data.num_classes)
    model.head = measured.probe.as_linear()
    metrics = {"epoch": 1, "train_loss": measured.train_loss, "val_loss": measured.val_loss, "val_acc": probe.val_acc,
               "scheduled_lr": math.nan, "epoch_seconds": probe.seconds,
               "trainable_params": sum(p.numel() for p in model.head.parameters()),
               "diverged": False, "phase": "probe", "cached_features": True}
    run.save_checkpoint(probe.trial_id, {"epoch": 1, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                                         "history": [metrics]})
    write_table_atomic([epoch_row(probe.trial_id, {**metrics, "workers": 1}, time.time(), probe=True)], EPOCH_SCHEMA, run.epochs_dir)
    record = TrialRecord()
    record.add_epoch(1, probe.val_acc, diverged=False)
    write_table_atomic([trial_row(probe.trial_id, config.to_dict(), record, "completed", None, time.time() - started, workers=1,
                                  probe=True)],
                       TRIAL_SCHEMA, run.trials_dir)
