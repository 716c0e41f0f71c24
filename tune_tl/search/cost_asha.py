"""ASHA whose rungs are cumulative training seconds: trials are compared at equal cost, not equal epochs.

Learning curves of different freeze policies cross. After one epoch a head-only or linear-probe trial
(seconds per epoch, or less with the feature cache) leads a whole-model fine-tune (tens of seconds per
epoch) that will finish far higher, so ASHA on epoch rungs stops the eventual winners. Here a trial's
clock is the sum of its reported ``epoch_seconds`` (training time only: no Ray start-up or checkpoint
writes, and the same number the Parquet ``epochs`` table keeps, so the rungs can be replayed on
resume). A cheap trial reaches the first rung only after as many seconds as an expensive one, by which
time it has run several epochs, or it finishes below the first rung and is never compared at all.

The rung unit is learned, not configured: ``grace_period`` epochs of the search's *first* trial (the
textbook whole-model fine-tune when the sampler's textbook start is on), measured on its first epoch.
Rungs are then ``grace_period × unit × reduction_factor^k`` up to ``max_epochs × unit``. A trial's own
``max_epochs`` still ends it (the trainable stops), so the last rung never stops anything. The unit and
the rungs are written to ``<search>/scheduler.json`` when learned: ``tune-tl resume`` rebuilds the same
rungs from it, and ``tune-tl report`` draws them (:func:`recorded_rungs`), so the rungs have one owner.

    >>> CostASHA("results/demo", metric="val_acc", mode="max", max_epochs=6)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from ray.tune.schedulers import TrialScheduler

from tune_tl.search.replay_asha import ReplayASHA
from tune_tl.store.results import write_json_atomic
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location

log = logging.getLogger(__name__)

#: The scheduler's clock: cumulative ``epoch_seconds`` of a trial (added to the results it decides on).
TRAINING_SECONDS = "training_seconds"


def cost_rungs(unit: float, grace_period: int, max_epochs: int, reduction_factor: float) -> list[float]:
    """Rung milestones, lowest first: ``grace_period × unit × reduction_factor^k``, as many as Ray's ASHA makes
    between ``grace_period`` and ``max_epochs`` units (Ray's ``_Bracket``: ``int(log(max_t/min_t)/log(rf) + 1)``,
    so a rung can sit at ``max_epochs`` itself).

    ``unit`` is seconds of one epoch here; with ``unit=1`` these are the epoch rungs of Ray's ``ASHAScheduler``
    (``--scheduler asha``, and PASHA's levels below its maximum), the one formula for both.

        >>> cost_rungs(1, grace_period=1, max_epochs=9, reduction_factor=3)
        [1, 3, 9]
    """
    # Counted on epochs, exactly as Ray counts them: seconds (6 × 0.1 / 0.1 = 6.000000000000001) would
    # let float rounding add or drop the rung at max_epochs.
    count = int(np.log(max(max_epochs, grace_period) / grace_period) / np.log(reduction_factor) + 1)
    return [grace_period * unit * reduction_factor**k for k in range(count)]


def recorded_rungs(run: SearchRun) -> list[float]:
    """The rungs, in training seconds, that the search's cost-aware ASHA recorded in ``scheduler.json``.

    ``[]`` while it has not learned its unit (no file yet). A file from before rungs were recorded holds only
    the unit: the rungs are rebuilt from it and the search's budget, as ``tune-tl resume`` does.
    """
    state = _read_state(run)
    if isinstance(state.get("rungs"), list):
        return [float(m) for m in state["rungs"]]
    budget = run.metadata.get("budget") or {}
    if not isinstance(state.get("unit_seconds"), (int, float)) or not budget:
        return []
    return cost_rungs(float(state["unit_seconds"]), budget["grace_period"], budget["max_epochs"], budget["reduction_factor"])


def _read_state(run: SearchRun) -> dict:
    """``scheduler.json`` as a dict; ``{}`` when it is missing or unreadable (nothing learned, as far as we know)."""
    file = run.scheduler_file
    try:
        state = json.loads(file.read_text()) if file.is_file() else {}
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


class CostASHA(ReplayASHA):
    """Ray's ``ASHAScheduler`` (one bracket) with ``time_attr`` = cumulative training seconds.

    Args:
        root: The search folder (its Parquet results are replayed after ``tune-tl resume``).
        metric, mode: The objective.
        max_epochs: Epoch budget of a trial (the trainable stops there).
        grace_period: Epochs of the first trial that make the first rung.
        reduction_factor: Keep the top ``1 / reduction_factor`` at each rung.
        grace_seconds: Fix the first rung in seconds instead of learning it from the first trial.
    """

    def __init__(self, root: str | Path | Location, *, metric: str, mode: str, max_epochs: int,
                 grace_period: int = 1, reduction_factor: float = 3, grace_seconds: float | None = None):
        super().__init__(root, time_attr=TRAINING_SECONDS, metric=metric, mode=mode, max_t=max(max_epochs, grace_period),
                         grace_period=grace_period, reduction_factor=reduction_factor, stop_last_trials=False)
        self._grace_epochs, self._max_epochs, self._rf = grace_period, max_epochs, reduction_factor
        self.unit: float | None = None  # seconds of one epoch of the first trial
        self._first: str | None = None
        self._clock: dict[str, tuple[int, float]] = {}  # trial_id -> (last epoch, training seconds)
        if grace_seconds:
            self._set_rungs(grace_seconds / grace_period)

    @property
    def rungs(self) -> list[float]:
        """Rung milestones in training seconds, lowest first (empty until the unit is known)."""
        return sorted(m for m, _ in self._brackets[0]._rungs) if self.unit else []

    def _set_rungs(self, unit: float) -> None:
        self.unit = max(float(unit), 1e-6)
        # Mutate the one bracket in place: trials already added keep pointing at it.
        self._brackets[0]._rungs = [(m, {}) for m in reversed(cost_rungs(self.unit, self._grace_epochs, self._max_epochs, self._rf))]
        self._max_t = self._max_epochs * self.unit
        log.info("cost-aware ASHA: rungs at %s training seconds", ", ".join(f"{m:.1f}" for m in self.rungs))
        self._save_state()

    def _timed(self, trial_id: str, result: dict) -> dict:
        """``result`` plus the trial's cumulative training seconds; learns the unit from the first trial."""
        epoch, seconds = result.get("epoch"), result.get("epoch_seconds")
        last_epoch, total = self._clock.get(trial_id, (0, 0.0))
        if epoch is not None and seconds is not None and epoch > last_epoch:
            total += float(seconds)
            self._clock[trial_id] = (int(epoch), total)
            if self.unit is None and trial_id == (self._first or trial_id):
                self._set_rungs(float(seconds))
        return {**result, TRAINING_SECONDS: total}

    def _save_state(self) -> None:
        """Record the unit and the rungs in ``scheduler.json``, for ``tune-tl resume`` and the report."""
        run = SearchRun(self.root)
        if not run.root.exists():
            return  # no search folder (e.g. the replay simulator): nothing to resume or report
        state = {"scheduler": "cost-asha", "time_attr": TRAINING_SECONDS, "unit_seconds": self.unit, "rungs": self.rungs}
        try:
            write_json_atomic(state, run.scheduler_file)
        except OSError as exc:  # resume would fall back to the first recorded epoch; the report draws no rungs
            log.warning("could not record the cost-aware ASHA rungs: %s", exc)

    def _saved_unit(self) -> float | None:
        unit = _read_state(SearchRun(self.root)).get("unit_seconds")
        return float(unit) if isinstance(unit, (int, float)) else None

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)
        if self._first is None:
            self._first = trial.trial_id

    def on_trial_result(self, tune_controller, trial, result):
        self._replay_once()
        result = self._timed(trial.trial_id, result)
        if self.unit is None:
            return TrialScheduler.CONTINUE  # no rungs before the first trial's first epoch
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        if self._first == trial.trial_id and self.unit is None:
            self._first = None  # it ended without an epoch: the next first epoch sets the unit
        result = self._timed(trial.trial_id, result or {})
        if self.unit is None:
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        if self._first == trial.trial_id and self.unit is None:
            self._first = None
        self._trial_info.pop(trial.trial_id, None)

    def replay(self, epochs, trials=None) -> int:
        """Rebuild the unit, the trials' clocks and the rungs from recorded epochs (see ``ReplayASHA``)."""
        if not len(epochs):
            return 0
        order = [c for c in ("time", "epoch") if c in epochs.columns]
        epochs = epochs.sort_values(order, kind="stable")
        epochs = epochs.assign(**{TRAINING_SECONDS: epochs.groupby("trial_id")["epoch_seconds"].cumsum()})
        if self.unit is None:  # the live run's unit, else (no file) the first recorded epoch; recorded either way
            self._set_rungs(self._saved_unit() or float(epochs["epoch_seconds"].iloc[0]))
        for row in epochs.groupby("trial_id").tail(1).itertuples(index=False):
            self._clock[row.trial_id] = (int(row.epoch), float(getattr(row, TRAINING_SECONDS)))
        return super().replay(epochs, trials)
