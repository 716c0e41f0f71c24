"""What a finished search produced, read back from its Parquet results: ``summarize(root)``.

The CLI prints it; callers of ``run_search`` get it back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tune_tl.config.params import PARAMS, TrialConfig
from tune_tl.search.admission import trial_rate
from tune_tl.search.plan import SearchPlan
from tune_tl.store.ranking import best_row, best_so_far, ensemble_ships, ranked
from tune_tl.store.schema import NOT_STARTED, STATUSES
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location
from tune_tl.training.cost_model import cheapest_fine_tune
from tune_tl.training.frozen_features import INPUT_VARYING_PARAMS
from tune_tl.training.recipe import inputs_vary


@dataclass(frozen=True)
class SearchSummary:
    """What a finished search produced, for the CLI summary and for callers."""

    path: Location
    counts: dict[str, int]
    best: dict[str, Any] | None
    #: Bad image files left out under ``skip_bad_images`` (listed in ``skipped_images.txt``).
    skipped_images: int = 0
    #: Trials whose inputs change every epoch (augmentation, auto_augment, mixup, cutmix): no feature cache.
    uncached_trials: int = 0
    #: ``budget.time`` seconds (``--time-budget``) ran out before the search had run all its trials.
    ended_by_time_budget: bool = False
    #: Stage-0 linear probes (``search.probes``); ``counts`` are the other trials'.
    probes: int = 0
    #: Best val_acc reached after 1, 2, 5 and 10 minutes (``None``: no epoch had ended yet), probes included.
    anytime: dict[float, float | None] = field(default_factory=dict)
    #: Whether any fine-tune (non-probe) epoch finished.
    fine_tuned: bool = True
    #: When none did: what one epoch of the cheapest fine-tune in the space needs (``None``: not estimated).
    fine_tune_need: FineTuneNeed | None = None
    #: Trials (probes included) with a comparable val accuracy: the best val figure is the maximum over these.
    ranked_trials: int = 0
    #: ``search.json``'s ``test``: the shipped trial scored once on the test split (``search.held_out``), or ``None``.
    test: dict[str, Any] | None = None
    #: ``search.json``'s ``ensemble``: members, weights and val accuracy (``search.ensemble``), or ``None``.
    ensemble: dict[str, Any] | None = None


@dataclass(frozen=True)
class FineTuneNeed:
    """The time budget one epoch of the cheapest fine-tune in the space needs (``training.cost_model.cheapest_fine_tune``):
    what the search spent before its Tuner started (data, probes) and kept for its end (``search.finish``) plus that
    epoch's predicted seconds."""

    config: str  # how the summary names the config
    epoch_seconds: float
    before_seconds: float

    @property
    def budget(self) -> float:
        return self.before_seconds + self.epoch_seconds


def fine_tune_need(plan: SearchPlan, probes: Sequence[Mapping], before_seconds: float, trial_cpus: float,
                   gpus: float = 0) -> FineTuneNeed | None:
    """:class:`FineTuneNeed` of the plan's space, with seconds per FLOP from the probes (``search.admission.probe_rate``);
    ``None`` without a probe to calibrate on or a fine-tune in the space."""
    model = plan.cost_model
    cheapest = cheapest_fine_tune(model, None if plan.spec.space_fn is not None else plan.sub_spaces, plan.spec.source)
    rate = trial_rate(probes, model, trial_cpus, gpus)
    if cheapest is None or rate is None:
        return None
    cfg, flops = cheapest
    blocks = model.num_blocks[cfg.backbone]
    policy = {"prefix": f"{cfg.freeze_blocks} of {blocks} blocks frozen", "surgical": f"only block {cfg.train_block} trains",
              "full": "whole model"}.get(cfg.freeze_policy, cfg.freeze_policy)
    return FineTuneNeed(f"{cfg.backbone} at {cfg.resolution} px, {policy}", flops * rate, before_seconds)


#: The anytime figures a summary shows: seconds since the search started.
ANYTIME_SECONDS = (60.0, 120.0, 300.0, 600.0)


def summarize(root: Location, skipped_images: int = 0, ended_by_time_budget: bool = False,
              fine_tune_need: FineTuneNeed | None = None) -> SearchSummary:
    """Counts by status, the best trial's row (``store.ranking.best_row``) and the anytime figures, read back from
    the Parquet results; ``fine_tune_need`` is shown when no fine-tune epoch finished."""
    run = SearchRun(root)
    trials = run.trials()
    probe = trials["probe"].eq(True)
    counts = {status: int((trials.loc[~probe, "status"] == status).sum()) for status in (*STATUSES, NOT_STARTED)}
    best = best_row(trials)
    start = run.start_time
    epochs = run.epochs()
    anytime = best_so_far(epochs, start, list(ANYTIME_SECONDS)) if start is not None else {}
    fine_tuned = bool((~epochs["probe"].eq(True)).any())
    ran = trials[~probe & trials["status"].ne(NOT_STARTED)]
    return SearchSummary(root, counts, None if best is None else best.dropna().to_dict(), skipped_images,
                         uncached_trials(ran), ended_by_time_budget, int(probe.sum()), anytime, fine_tuned=fine_tuned,
                         fine_tune_need=None if fine_tuned else fine_tune_need, ranked_trials=len(ranked(trials)),
                         test=run.test_record, ensemble=run.ensemble_record)


def uncached_trials(trials: pd.DataFrame) -> int:
    """How many trials could not use the frozen-feature cache because their inputs change every epoch."""
    return sum(inputs_vary(TrialConfig.from_row(row)) for row in trials.to_dict("records"))


def format_summary(summary: SearchSummary) -> str:
    """The summary a search or resume prints at its end: counts, the best trial and its config, where the tables are."""
    c, run = summary.counts, SearchRun(summary.path)
    probes = f"{summary.probes} linear probe(s), " if summary.probes else ""
    lines = ["", f"Search finished: {probes}{c['completed']} completed, {c['pruned']} pruned, {c['diverged']} diverged, "
                 f"{c['oom']} out of memory, {c['error']} failed."]
    if c.get(NOT_STARTED):
        lines.append(f"Not started: {c.get(NOT_STARTED)} proposed config(s) whose first epoch could not finish in the time left "
                     f"(status not_started; the reason is in the error column).")
    if summary.ended_by_time_budget:
        lines.append("The time budget ended the search: no new trials were started, running ones were stopped (status pruned).")
    if summary.ended_by_time_budget and not summary.fine_tuned:
        lines.append("The search could not fine-tune: the time budget ended before any fine-tune epoch finished.")
        need = summary.fine_tune_need
        if need is not None:
            lines.append(f"  One epoch of the cheapest fine-tune in the space ({need.config}) is predicted to take "
                         f"{need.epoch_seconds:.0f} s after the {need.before_seconds:.0f} s spent before it and kept for the end: "
                         f"--time-budget {math.ceil(need.budget)} or more.")
    if summary.best:
        best = summary.best
        lines.append(f"Best trial {best['trial_id']}: val_acc {best['best_val_acc']:.4f} "
                     f"(epoch {int(best['best_epoch'])}, {best['status']})")
        if best.get("probe"):  # its head was fitted by scikit-learn: the training parameters in its row never ran
            lines.append(f"  a linear probe: {best['backbone']} frozen at {best['resolution']} px, a convex head on its features "
                         f"(tune-tl export writes it)")
        else:
            lines.append("  config: " + ", ".join(f"{k}={_fmt(v)}" for k, v in best.items() if k in PARAMS))
        lines.append(honest_estimate(summary))
    if summary.ensemble:
        lines.append(ensemble_line(summary.ensemble, summary.test))
    if summary.anytime:
        lines.append("Best so far: " + ", ".join(f"{s / 60:g} min {'—' if acc is None else f'{acc:.4f}'}"
                                                  for s, acc in summary.anytime.items()))
    if summary.uncached_trials:
        lines.append(f"Feature cache: not used by {summary.uncached_trials} trial(s) whose inputs change every epoch "
                     f"({', '.join(INPUT_VARYING_PARAMS)})")
    if summary.skipped_images:
        lines.append(f"Skipped {summary.skipped_images} bad image file(s); listed in {run.skipped_file}")
    lines.append(f"Results (Parquet): {run.trials_dir}  and  {run.epochs_dir}")
    lines.append(f"Read them with: pandas.read_parquet('{run.trials_dir}')")
    return "\n".join(lines)


def honest_estimate(summary: SearchSummary) -> str:
    """The best val figure next to the test one (``search.held_out``), or why the val figure is optimistic."""
    val = f"val {summary.best['best_val_acc']:.4f} (best of {summary.ranked_trials} trials: optimistic)"
    test = summary.test
    if test and test.get("test_acc") is not None:
        shipped = ("" if test["trial_id"] == summary.best["trial_id"]
                   else f" of the shipped trial {test['trial_id']} (val {test['val_acc']:.4f})")
        return f"  {val} · test {test['test_acc']:.4f} on {test['test_images']} images{shipped} (never used to choose)"
    return f"  {val}; no test split for an honest figure: put held-out images in <data>/test/<class>/ (scored once, never to choose)"


def ensemble_line(ensemble: dict[str, Any], test: dict[str, Any] | None = None) -> str:
    """The ensemble chosen on val (``search.ensemble``): its accuracy and members with weights, and its test figure
    beside the shipped trial's when the search scored both (``search.held_out``)."""
    members = ", ".join(f"{m['trial_id']} {m['weight']:.2f}" for m in ensemble["members"])
    if len(ensemble["members"]) == 1:
        return (f"Ensemble: none better on val than the best single member ({members}); "
                f"a member must add at least one correct val image")
    scored = ""
    if test and test.get("ensemble_test_acc") is not None:
        scored = f"; test {test['ensemble_test_acc']:.4f} vs the shipped trial's {test['test_acc']:.4f}, never used to choose"
    ships = ("; tune-tl export ships it (a point or more above the best single on val; --single exports that one)"
             if ensemble_ships(ensemble) else "; tune-tl export ships the best single (--ensemble exports this)")
    return (f"Ensemble (val {ensemble['val_acc']:.4f} vs best single {ensemble['best_single_val_acc']:.4f}, chosen on val: "
            f"optimistic too{scored}): {members}{ships}")


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
