"""ASHA whose rungs are cumulative predicted training cost: trials are compared at equal cost, not equal epochs.

Learning curves of different freeze policies cross. After one epoch a head-only or linear-probe trial
(cheap, or nearly free with the feature cache) leads a whole-model fine-tune (tens of seconds per epoch)
that will finish far higher, so ASHA on epoch rungs stops the eventual winners. Here a trial's clock is
the cost its epochs so far are *predicted* to have (:mod:`tune_tl.training.cost_model`: counted FLOPs from
the trial's config), so a cheap trial reaches the first rung only after as much cost as an expensive one,
by which time it has run several epochs, or it finishes below the first rung and is never compared.

Nothing measured enters a decision: the unit is a whole-model fine-tune epoch of the search's first
backbone at its largest resolution (``CostModel.fine_tune_epoch``), rungs are
``grace_period × unit × reduction_factor^k`` up to ``max_epochs × unit``, and both are known before the
first trial starts. Two runs of one seeded search therefore prune the same trials however loaded the
machine is. A trial's own ``max_epochs`` still ends it (the trainable stops), so the last rung never stops
anything. The unit, the rungs and the cost model are written to ``<search>/scheduler.json``: ``tune-tl
report`` draws the rungs (:func:`recorded_rungs`) and the curves on the same clock, so the rungs have one owner.

Without a cost model (the replay simulator, which has recorded seconds but no backbones, and schedulers
pickled by tune_tl versions before the cost model) the clock is measured ``epoch_seconds`` and the unit is
the first trial's first epoch, as it used to be.

    >>> CostASHA("results/demo", metric="val_acc", mode="max", max_epochs=6, cost_model=model)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tune_tl.compat import asha_rungs, asha_settings, forget_trial, set_asha_rungs
from tune_tl.config.params import TrialConfig
from tune_tl.config.spec import cost_rungs
from tune_tl.search.replay_asha import ReplayASHA
from tune_tl.store.scheduler_record import scheduler_state, write_scheduler_state
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location
from tune_tl.training.cost_model import TRAINING_COST, CostModel, recorded_costs, table_configs

log = logging.getLogger(__name__)

#: The clock without a cost model: cumulative measured ``epoch_seconds``.
TRAINING_SECONDS = "training_seconds"


class CostASHA(ReplayASHA):
    """Ray's ``ASHAScheduler`` (one bracket) with ``time_attr`` = a trial's cumulative predicted cost.

    Args:
        root: The search folder (its Parquet results are replayed after ``tune-tl resume``).
        metric, mode: The objective.
        max_epochs: Epoch budget of a trial (the trainable stops there).
        grace_period: Units of cost before the first rung.
        reduction_factor: Keep the top ``1 / reduction_factor`` at each rung.
        cost_model: Predicts each epoch's cost from the trial's config; ``None``: measured seconds (see the module docstring).
        unit: The cost of one rung unit; default: ``cost_model.fine_tune_epoch()`` (without a model: learned from
            the first trial's first epoch, in seconds).
    """

    def __init__(self, root: str | Path | Location, *, metric: str, mode: str, max_epochs: int, grace_period: int = 1,
                 reduction_factor: float = 3, cost_model: CostModel | None = None, unit: float | None = None):
        super().__init__(root, time_attr=TRAINING_SECONDS if cost_model is None else TRAINING_COST, metric=metric, mode=mode,
                         max_t=max(max_epochs, grace_period), grace_period=grace_period, reduction_factor=reduction_factor,
                         stop_last_trials=False)
        self._grace_epochs, self._max_epochs, self._rf = grace_period, max_epochs, reduction_factor
        self.cost_model = cost_model
        self.unit: float | None = None  # one rung unit on the clock: FLOPs, or seconds without a cost model
        self._first: str | None = None  # measured seconds only: the trial whose first epoch sets the unit
        self._clock: dict[str, tuple[int, float]] = {}  # trial_id -> (last epoch, cumulative cost)
        self._configs: dict[str, Mapping[str, Any]] = {}  # trial_id -> Ray config, for the replay after a resume
        unit = unit or (cost_model.fine_tune_epoch() if cost_model is not None else None)
        if unit:
            self._set_rungs(unit)

    def __setstate__(self, state: dict) -> None:
        # A scheduler pickled by a tune_tl before the cost model (``tune-tl resume`` of an older search): measured seconds.
        self.__dict__.update({"cost_model": None, "_configs": {}, **state})

    @property
    def clock_key(self) -> str:
        """The result key of the trials' clock: Ray's ``time_attr`` (:data:`TRAINING_COST`, or :data:`TRAINING_SECONDS`)."""
        return asha_settings(self).time_attr

    @property
    def rungs(self) -> list[float]:
        """Rung milestones on the clock, lowest first (empty until the unit is known)."""
        return asha_rungs(self) if self.unit else []

    def _set_rungs(self, unit: float) -> None:
        self.unit = max(float(unit), 1e-6)
        set_asha_rungs(self, cost_rungs(self.unit, self._grace_epochs, self._max_epochs, self._rf), self._max_epochs * self.unit)
        if self.cost_model is None:
            log.info("cost-aware ASHA: rungs at %s training seconds", ", ".join(f"{m:.1f}" for m in self.rungs))
        else:
            log.info("cost-aware ASHA: rungs at %s whole-model fine-tune epochs (%.3g FLOPs each)",
                     ", ".join(f"{m / self.unit:g}" for m in self.rungs), self.unit)
        self._save_state()

    def _timed(self, trial, result: dict) -> dict:
        """``result`` plus the trial's clock; without a cost model, learns the unit from the first trial."""
        epoch = result.get("epoch")
        last_epoch, total = self._clock.get(trial.trial_id, (0, 0.0))
        if epoch is not None and epoch > last_epoch:
            if self.cost_model is not None:
                total = self.cost_model.trial_cost(TrialConfig.from_dict(trial.config), int(epoch))
                self._clock[trial.trial_id] = (int(epoch), total)
            elif result.get("epoch_seconds") is not None:
                seconds = float(result["epoch_seconds"])
                total += seconds
                self._clock[trial.trial_id] = (int(epoch), total)
                if self.unit is None and trial.trial_id == (self._first or trial.trial_id):
                    self._set_rungs(seconds)
        return {**result, self.clock_key: total}

    def _save_state(self) -> None:
        """Record the unit and the rungs (and the cost model) in ``scheduler.json``, for ``tune-tl resume`` and the report."""
        run = SearchRun(self.root)
        if not run.root.exists():
            return  # no search folder (e.g. the replay simulator): nothing to resume or report
        if self.cost_model is None:
            state = {"scheduler": "cost-asha", "time_attr": self.clock_key, "unit_seconds": self.unit, "rungs": self.rungs}
        else:
            state = {"scheduler": "cost-asha", "time_attr": self.clock_key, "clock": "predicted FLOPs", "unit": self.unit,
                     "rungs": self.rungs, "cost_model": self.cost_model.to_dict()}
        try:
            write_scheduler_state(run, state)
        except OSError as exc:  # the report draws no rungs; resume still has the pickled scheduler
            log.warning("could not record the cost-aware ASHA rungs: %s", exc)

    def _saved_unit(self) -> float | None:
        unit = scheduler_state(SearchRun(self.root)).get("unit_seconds")
        return float(unit) if isinstance(unit, (int, float)) else None

    def on_trial_add(self, tune_controller, trial):
        # No replay here: a resumed Tuner adds every restored trial before the first result, and the replay needs
        # their configs (a trial still running when the driver died has no row in the trials table yet).
        self._configs[trial.trial_id] = dict(getattr(trial, "config", None) or {})
        ASHAScheduler.on_trial_add(self, tune_controller, trial)
        if self._first is None:
            self._first = trial.trial_id

    def on_trial_result(self, tune_controller, trial, result):
        self._replay_once()
        result = self._timed(trial, result)
        if self.unit is None:
            return TrialScheduler.CONTINUE  # measured seconds: no rungs before the first trial's first epoch
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        self._replay_once()
        if self._first == trial.trial_id and self.unit is None:
            self._first = None  # it ended without an epoch: the next first epoch sets the unit
        result = self._timed(trial, result or {})
        if self.unit is None:
            forget_trial(self, trial.trial_id)
            return
        super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        if self._first == trial.trial_id and self.unit is None:
            self._first = None
        forget_trial(self, trial.trial_id)

    def replay(self, epochs, trials=None) -> int:
        """Rebuild the trials' clocks and the rungs' records from recorded epochs (see ``ReplayASHA``).

        With a cost model each epoch's clock is predicted again from its trial's config: the ``trials`` table's
        row for a finished trial, Ray's restored config for one that was still running. Without one it is the
        cumulative ``epoch_seconds``, and the unit the live run recorded (else the first recorded epoch).
        """
        if not len(epochs):
            return 0
        order = [c for c in ("time", "epoch") if c in epochs.columns]
        epochs = epochs.sort_values(order, kind="stable")
        if self.cost_model is not None:
            configs = {**table_configs(trials), **{t: TrialConfig.from_dict(c) for t, c in self._configs.items() if c}}
            unknown = sorted(set(epochs["trial_id"]) - set(configs))
            if unknown:
                log.warning("cost-aware ASHA: no config for recorded trial(s) %s; their epochs are not replayed", ", ".join(unknown))
            epochs = recorded_costs(self.cost_model, configs, epochs)
        else:
            epochs = epochs.assign(**{self.clock_key: epochs.groupby("trial_id")["epoch_seconds"].cumsum()})
            if self.unit is None:  # the live run's unit, else (no file) the first recorded epoch; recorded either way
                self._set_rungs(self._saved_unit() or float(epochs["epoch_seconds"].iloc[0]))
        for row in epochs.groupby("trial_id").tail(1).itertuples(index=False):
            self._clock[row.trial_id] = (int(row.epoch), float(getattr(row, self.clock_key)))
        return super().replay(epochs, trials)
