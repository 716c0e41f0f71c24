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
- a head that fine-tunes with ``head_init: probe`` at the same backbone and resolution start from, fitted on the
  same features (``training.linear_probe.fit_start_head``; kept beside the probe's own in ``<search>/probe_heads.pt``,
  ``SearchRun.start_heads``, so ``tune-tl resume`` gives trials the same heads).

A probe runs at the backbone's native resolution when the space can sample it, else at the largest
resolution the space allows for that backbone. Cheapest backbone first: the first answer comes soonest.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import optuna
import pandas as pd
import torch
from optuna.trial import FrozenTrial, TrialState

from tune_tl.compat import distribution_contains
from tune_tl.config.params import PARAMS, TrialConfig
from tune_tl.data.preprocess import Normaliser
from tune_tl.search.plan import SearchPlan
from tune_tl.search.probe_budget import (
    LOGME_IMAGES,
    MIN_PER_CLASS,
    MIN_SUBSET_SHARE,
    PROBE_SHARE,
    RATE_IMAGES,
    WHOLE_SPLIT_SHARE,
    ProbeBudget,
    probe_flops,
    stratified_subset,
    train_images_that_fit,
)
from tune_tl.search.rank import ranking_row, ranking_table, select_backbones
from tune_tl.search.textbook import fit_to_space
from tune_tl.store.results import epoch_row, trial_row, write_table_atomic
from tune_tl.store.schema import EPOCH_SCHEMA, TRIAL_SCHEMA
from tune_tl.store.search_run import SearchRun
from tune_tl.store.trial_record import TrialRecord
from tune_tl.training.batches import frozen_dtype
from tune_tl.training.context import PreparedSearch, TrialContext
from tune_tl.training.frozen_features import float32_slowdown, pooled_features
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
    #: Train images it was fitted on when the time budget allowed only a stratified subset (``None``: all of them).
    subset: int | None = None
    #: How many times ``seconds`` its pass would have taken in float32 (``ProbeBudget.float32_factor``).
    float32_factor: float = 1.0

    def record(self) -> dict:
        """What ``search.json`` keeps of it (under ``probes``)."""
        return {k: v for k, v in asdict(self).items() if k != "config"}


def probe_id(backbone: str, resolution: int) -> str:
    return f"probe-{backbone.replace('/', '_')}-{resolution}"


def probe_plan(plan: SearchPlan, prepared: PreparedSearch) -> list[tuple[str, int]]:
    """``(backbone, resolution)`` of each probe to run, cheapest first: predicted FLOPs (``probe_budget.probe_flops``),
    then resolution and parameter count."""
    chosen = []
    for name, backbone in plan.backbones.items():
        allowed = plan.allowed_resolutions(name)
        chosen.append((name, backbone.native_size if backbone.native_size in allowed else max(allowed)))
    params = {name: sum(p.numel() for p in prepared.backbones[name].features.parameters()) for name in plan.backbones}
    flops = {(n, r): probe_flops(plan.cost_model, n, prepared.context.data.splits[r]) for n, r in chosen}
    return sorted(chosen, key=lambda p: (flops[p], p[1], params[p[0]]))


def run_probes(plan: SearchPlan, prepared: PreparedSearch, run: SearchRun, cache: str | None, deadline: float | None = None,
               done: Mapping[str, Probe] | None = None) -> list[Probe]:
    """Measure the planned probes that fit :data:`~tune_tl.search.probe_budget.PROBE_SHARE` of the time budget
    (``search.probe_budget``), record each as a finished trial of ``run`` as it ends, and return them.

    Stops before a probe when ``deadline`` (a ``time.monotonic()`` value: the time budget) has passed. A probe in
    ``done`` (:func:`finished_probes` of a search stopped in stage 0) is kept as it was, not run again.
    """
    stage = _Stage0(plan, prepared, run, cache, ProbeBudget.for_search(plan.spec.budget.time))
    order = probe_plan(plan, prepared)
    for name, resolution in order:
        kept = (done or {}).get(probe_id(name, resolution))
        if kept is not None and (name, resolution) in stage.heads:
            stage.keep(kept)
    order = [p for p in order if probe_id(*p) not in {k.trial_id for k in stage.probes}]
    if order and stage.budget.allowed is not None:
        stage.calibrate(*order[0])
    over: list[tuple[str, int]] = []
    for name, resolution in order:
        split = prepared.context.data.splits[resolution]
        flops = probe_flops(plan.cost_model, name, split)
        if deadline is not None and time.monotonic() >= deadline and stage.probes:
            stage.skip_log(name, resolution, flops, "the time budget has run out: not probed")
            continue
        if not over and stage.budget.fits(flops):
            stage.probe(name, resolution, split)
        elif not stage.probes and not over:  # not even the cheapest fits: a subset, so the search has a model to export
            stage.skip_log(name, resolution, flops, "probing it on a stratified subset instead")
            stage.probe_subset(name, resolution, split, shrink_val=True)
        else:
            over.append((name, resolution))
    if over:
        stage.probe_best_ranked(over)
    return stage.probes


class _Stage0:
    """The probes of one search as they run: what is measured, recorded and logged (``run_probes``'s state)."""

    def __init__(self, plan: SearchPlan, prepared: PreparedSearch, run: SearchRun, cache: str | None, budget: ProbeBudget):
        self.plan, self.spec, self.prepared, self.run, self.cache, self.budget = plan, plan.spec, prepared, run, cache, budget
        self.probes: list[Probe] = []
        self.heads = run.probe_heads()  # a resumed stage 0's finished probes' heads among them
        self.starts = run.start_heads()

    def keep(self, probe: Probe) -> None:
        """A probe a search stopped in stage 0 finished: kept as it was, its seconds spent from the probes' share."""
        self.probes.append(probe)
        self.budget.started -= probe.seconds
        log.info("probe %s at %d px: val_acc %.4f, kept from the run that was stopped (not run again)", probe.backbone,
                 probe.resolution, probe.val_acc)

    def calibrate(self, name: str, resolution: int) -> None:
        """This machine's seconds per FLOP: a forward of a few stratified images of the cheapest probe's backbone."""
        backbone, full = self.prepared.backbones[name], self.prepared.context.data.splits[resolution]
        normalise = Normaliser(backbone.mean, backbone.std)
        warm = stratified_subset(full, 1, 1, self.spec.seed)  # the first call's one-off costs (allocation, kernels) are not per image
        pooled_features(name, backbone.features, warm, normalise, RATE_IMAGES, None)
        split = stratified_subset(full, RATE_IMAGES, 1, self.spec.seed)
        started = time.perf_counter()
        pooled_features(name, backbone.features, split, normalise, RATE_IMAGES, None)
        self.budget.measured(probe_flops(self.plan.cost_model, name, split), time.perf_counter() - started)
        dtype = frozen_dtype(normalise.device)
        self.budget.float32_factor = float32_slowdown(backbone.features, split, normalise)
        precision = f" in {str(dtype).removeprefix('torch.')} ({self.budget.float32_factor:.1f}x float32's speed)"
        log.info("probe budget: %.0f s for the probes (%.0f%% of the time budget); this machine runs %s at %.2g s per GFLOP%s",
                 self.budget.allowed, 100 * PROBE_SHARE, name, self.budget.rate * 1e9, precision if dtype != torch.float32 else "")

    def skip_log(self, name: str, resolution: int, flops: float, then: str) -> None:
        log.info("probe budget: the probe of %s at %d px is predicted to take %.0f s, more than the %.0f s left of the probes' "
                 "share (%.0f%% of the time budget, %.0f s); %s", name, resolution, self.budget.seconds(flops) or 0.0,
                 max(self.budget.left, 0.0), 100 * PROBE_SHARE, self.budget.allowed or 0.0, then)

    def probe(self, name: str, resolution: int, split, subset: int | None = None) -> Probe:
        started = time.time()
        data = self.prepared.context.data
        measured = measure_probe(self.prepared.backbones[name], split, data.num_classes, self.spec.seed, None if subset else self.cache,
                                 start_head=True)
        self.budget.measured(probe_flops(self.plan.cost_model, name, split), measured.seconds)
        config = probe_config(self.plan, name, resolution)
        probe = Probe(probe_id(name, resolution), name, resolution, measured.logme, measured.val_acc, measured.probe.C, measured.seconds,
                      config, subset, self.budget.float32_factor)
        _record(self.run, self.prepared, probe, measured, started)
        self.heads[(name, resolution)] = measured.probe.tensors()
        self.starts[(name, resolution)] = measured.start.tensors()
        self.run.save_probe_heads(self.heads, self.starts)
        best = max(self.probes + [probe], key=lambda p: p.val_acc)
        self.probes.append(probe)
        self.run.update_metadata(probes=[p.record() for p in self.probes])  # last: a probe listed here is whole (resume keeps it)
        log.info("probe %s at %d px%s: val_acc %.4f (LogME %.3f, C %.3g) in %.0f s%s", name, resolution,
                 f" on {subset} stratified train images" if subset else "", probe.val_acc, probe.logme, probe.C, probe.seconds,
                 " - best so far" if best is probe else "")
        return probe

    def probe_subset(self, name: str, resolution: int, split, shrink_val: bool) -> Probe | None:
        """A probe on as many stratified train images as the share has time for, scored on all of val (or, with
        ``shrink_val`` when val alone does not fit, on a stratified half of what fits). Without ``shrink_val`` (a
        best-ranked probe: another probe ran in full), ``None`` when fewer than :data:`MIN_SUBSET_SHARE` of train fit;
        on all of train when at least :data:`WHOLE_SPLIT_SHARE` of it fits."""
        per_image = self.plan.cost_model.image_flops(name, resolution)
        classes = len(np.unique(split.train_y))
        train = train_images_that_fit(self.budget, per_image, len(split.val_y))
        if train is None or train >= WHOLE_SPLIT_SHARE * len(split.train_y):
            log.info("probe budget: %s is probed on all %d train images: the time left fits %s of them, and only a probe on "
                     "every image keeps the boundaries its fine-tunes start from", name, len(split.train_y),
                     "all" if train is None else f"{min(train, len(split.train_y))} ({100 * WHOLE_SPLIT_SHARE:.0f}% or more)")
            return self.probe(name, resolution, split)
        val = None
        if train is not None and train < self._fewest_train(split, shrink_val):
            if not shrink_val:
                self._too_few_log(name, train, split)
                return None
            room = max(2 * MIN_PER_CLASS * classes, train + len(split.val_y))  # at least a few images of each class
            train, val = room // 2, room - room // 2
        subset = stratified_subset(split, train, val, self.spec.seed)
        return self.probe(name, resolution, subset, subset=len(subset.train_y))

    def _too_few_log(self, name: str, train: int, split) -> None:
        log.info("probe budget: %s not probed: the %.0f s left of the probes' share %s", name, max(self.budget.left, 0.0),
                 _too_few(train, split))

    @staticmethod
    def _fewest_train(split, shrink_val: bool) -> int:
        """The fewest train images a subset probe of ``split`` runs on (see :meth:`probe_subset`)."""
        floor = MIN_PER_CLASS * len(np.unique(split.train_y))
        return floor if shrink_val else max(floor, math.ceil(MIN_SUBSET_SHARE * len(split.train_y)))

    def probe_best_ranked(self, over: list[tuple[str, int]]) -> None:
        """Rank the probes that did not fit by LogME on a stratified train subset; probe only the best, on a subset of
        at least :data:`MIN_SUBSET_SHARE` of train. Those with no time for that are neither ranked nor probed."""
        data = self.prepared.context.data
        ranking_flops = sum(self.plan.cost_model.image_flops(n, r) * (LOGME_IMAGES + data.num_classes) for n, r in over)
        if len(over) > 1 and not self.budget.fits(ranking_flops):
            for name, resolution in over:
                self.skip_log(name, resolution, probe_flops(self.plan.cost_model, name, data.splits[resolution]),
                              "no time left to rank it by LogME: not probed")
            return
        spent = ranking_flops if len(over) > 1 else 0.0
        room = {(n, r): train_images_that_fit(self.budget, self.plan.cost_model.image_flops(n, r), len(data.splits[r].val_y),
                                              spent) for n, r in over}
        fit = [p for p in over if room[p] is None or room[p] >= self._fewest_train(data.splits[p[1]], shrink_val=False)]
        for name, resolution in over:
            split = data.splits[resolution]
            then = (("ranking it by LogME on a stratified subset" if len(fit) > 1 else "probing it on a stratified subset")
                    if (name, resolution) in fit else
                    f"not probed: that time {_too_few(room[(name, resolution)], split)}")
            self.skip_log(name, resolution, probe_flops(self.plan.cost_model, name, split), then)
        if not fit:
            return
        scores = {}
        for name, resolution in fit if len(fit) > 1 else []:
            subset = stratified_subset(data.splits[resolution], LOGME_IMAGES, data.num_classes, self.spec.seed)
            scores[(name, resolution)] = measure_probe(self.prepared.backbones[name], subset, data.num_classes, self.spec.seed).logme
        best = max(fit, key=lambda p: scores.get(p, 0.0))
        for name, resolution in fit:
            if (name, resolution) != best:
                log.info("probe budget: %s not probed (LogME %.3f on %d images, below %s's)", name,
                         scores[(name, resolution)], LOGME_IMAGES, best[0])
        self.probe_subset(*best, data.splits[best[1]], shrink_val=False)


def _too_few(train: int, split) -> str:
    """Why a best-ranked probe is not run: the train images the time left fits, against :data:`MIN_SUBSET_SHARE`."""
    return f"fits {max(train, 0)} of its {len(split.train_y)} train images, fewer than {100 * MIN_SUBSET_SHARE:.0f}%"


def finished_probes(run: SearchRun, plan: SearchPlan, prepared: PreparedSearch) -> dict[str, Probe]:
    """The probes a search stopped in stage 0 finished (``search.json``'s ``probes``, written after each one's rows
    and head), by trial id, for :func:`run_probes` to keep; a backbone no longer in ``prepared`` is left out."""
    out = {}
    for record in run.probe_records:
        if record["backbone"] in prepared.backbones:
            config = probe_config(plan, record["backbone"], int(record["resolution"]))
            out[record["trial_id"]] = Probe(**{**record, "resolution": int(record["resolution"])}, config=config)
    return out


def trials_context(prepared: PreparedSearch, run: SearchRun, cache: str | None) -> TrialContext:
    """What every trial of ``run`` receives (a search's and its resume's): the prepared data, the feature cache, and the
    heads fine-tunes start from (``SearchRun.start_heads``, not the probes' own: see ``fit_start_head``)."""
    return dataclasses.replace(prepared.context, feature_cache=cache, probe_heads=run.start_heads())


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
               "trainable_params": sum(p.numel() for p in model.head.parameters()), "diverged": False, "phase": "probe",
               "cached_features": True}
    run.save_checkpoint(probe.trial_id, {"epoch": 1, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                                         "history": [metrics]})
    write_table_atomic([epoch_row(probe.trial_id, {**metrics, "workers": 1}, time.time(), probe=True)], EPOCH_SCHEMA, run.epochs_dir)
    record = TrialRecord()
    record.add_epoch(1, probe.val_acc, diverged=False)
    row = trial_row(probe.trial_id, config.to_dict(), record, "completed", None, time.time() - started, workers=1, probe=True)
    write_table_atomic([row], TRIAL_SCHEMA, run.trials_dir)
