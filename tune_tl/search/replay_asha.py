"""ASHA whose rung records are rebuilt from the Parquet results, so it survives a driver restart.

Ray Tune restores a scheduler as it was pickled when the Tuner was created, so after
``tune-tl resume`` plain ASHA starts with empty rungs: every trial passes the next rung, and
pruning is silently weaker than in an uninterrupted search. ``ReplayASHA`` replays the recorded
per-epoch results (``<search>/epochs``) and the trial endings (``<search>/trials``) through the
same bracket logic before it sees its first live trial, so its cutoffs are exactly those an
uninterrupted search would have.

    >>> asha = ReplayASHA("results/demo", time_attr="epoch", metric="val_acc", mode="max", max_t=4)
"""

from __future__ import annotations

import logging
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler

from tune_tl.compat import asha_bracket, asha_settings, record_in_bracket
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location

log = logging.getLogger(__name__)

#: Trial statuses whose last result went through ASHA's ``on_trial_complete`` in the live run.
_COMPLETED_BY_RAY = ("completed", "pruned", "diverged")


class ReplayASHA(ASHAScheduler):
    """``ASHAScheduler`` with ``replay(epochs, trials)``, run once from ``root`` before the first trial."""

    def __init__(self, root: str | Path | Location, **kwargs):
        super().__init__(**kwargs)
        self.root = Location.parse(root)
        self._replayed = False

    def replay(self, epochs, trials=None) -> int:
        """Feed recorded results into the rungs as the live run did; returns how many were replayed.

        Args:
            epochs: DataFrame with ``trial_id``, ``epoch`` (this scheduler's ``time_attr``) and the
                metric, in the order the driver received them (the ``time`` column).
            trials: DataFrame of finished trials (``trial_id``, ``status``); their last result is
                replayed as ``on_trial_complete`` did, which can record it in a lower rung.
        """
        bracket, asha = asha_bracket(self), asha_settings(self)
        if not len(epochs):
            return 0
        order = [c for c in ("time", "epoch") if c in epochs.columns]
        epochs = epochs.sort_values(order, kind="stable")
        for row in epochs.itertuples(index=False):
            value = getattr(row, asha.metric)
            t = getattr(row, asha.time_attr)
            if t >= asha.max_t and asha.stop_last_trials:
                continue  # on_trial_result stops these without consulting the bracket
            record_in_bracket(bracket, row.trial_id, t, asha.metric_op * value)
        if trials is not None and len(trials):
            done = trials[trials["status"].isin(_COMPLETED_BY_RAY)]["trial_id"]
            last = epochs.groupby("trial_id").tail(1).set_index("trial_id")
            for trial_id in done:
                if trial_id in last.index:
                    row = last.loc[trial_id]
                    record_in_bracket(bracket, trial_id, row[asha.time_attr], asha.metric_op * row[asha.metric])
        return len(epochs)

    def _replay_once(self) -> None:
        if self._replayed:
            return
        self._replayed = True
        run = SearchRun(self.root)
        epochs, trials = run.epochs(), run.trials()
        epochs, trials = epochs[~epochs["probe"].eq(True)], trials[~trials["probe"].eq(True)]  # probes never met a rung
        if not len(epochs):
            return  # a fresh search: nothing recorded yet
        n = self.replay(epochs, trials)
        log.info("ASHA: replayed %d recorded epoch results into the rungs", n)

    def on_trial_add(self, tune_controller, trial):
        self._replay_once()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        self._replay_once()
        return super().on_trial_result(tune_controller, trial, result)


#: Scheduler names accepted by ``--scheduler``; the first is the default.
