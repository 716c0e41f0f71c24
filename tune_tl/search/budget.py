"""The end of a search that its time budget (``budget.time``, ``--time-budget``) cut short.

Ray's ``TuneConfig(time_budget_s=...)`` stops starting trials and stops the running ones, but it
marks them TERMINATED without the ``on_trial_complete`` calls a normally ended trial gets, so neither
the Parquet sink nor the Optuna study would hear that they ended: no ``trials`` row, and Optuna trials
left RUNNING forever. :class:`CloseOpenTrials` runs at the experiment's end (before the sink's own
final flush) and ends every trial that started but was never ended: the sink writes its row (status
``pruned``: stopped before ``max_epochs``, with every epoch it reported) and the study records it as
PRUNED with its intermediate values. A trial Ray had created but not yet started gets no Parquet row;
its Optuna trial is told FAIL (``tune_tl_status`` = ``not_started``) so TPE ignores it. An epoch that
was under way when the budget ran out is not recorded (its result never reached the driver).
"""

from __future__ import annotations

import logging
import time

from ray.tune import Callback

from tune_tl.compat import set_trial_user_attr

log = logging.getLogger(__name__)


class CloseOpenTrials(Callback):
    """Driver-side Ray callback; list it *before* the ``ParquetSink`` in ``RunConfig(callbacks=...)``."""

    def __init__(self, sink, time_budget: float, study_storage: str | None = None, study_name: str | None = None):
        # The study by its address, not the searcher object: a restored Tuner unpickles its own copy.
        self.sink, self.time_budget = sink, time_budget
        self.study_storage, self.study_name = study_storage, study_name
        self._started: float | None = None

    def setup(self, **info):
        self._started = time.monotonic()  # as Ray's own budget clock, which also restarts on resume

    def on_experiment_end(self, trials, **info):
        if self._started is None or time.monotonic() - self._started < self.time_budget:
            return  # not the budget: an interrupted driver's trials continue on ``tune-tl resume``
        open_ids = self.sink.open_trials
        closed = [t.trial_id for t in trials if t.trial_id in open_ids]
        for trial in trials:
            if trial.trial_id in open_ids:
                self.sink.on_trial_complete(0, trials, trial)
        if closed:
            log.info("time budget: %d running trial(s) stopped and recorded as pruned", len(closed))
        self._end_in_study(set(closed), {t.trial_id for t in trials})

    def _end_in_study(self, stopped: set[str], experiment: set[str]) -> None:
        """Tell the study how this experiment's still-RUNNING trials ended (after a normal end: none)."""
        if not self.study_storage:
            return
        import optuna
        from optuna.trial import TrialState

        try:
            study = optuna.load_study(study_name=self.study_name, storage=self.study_storage)
            for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                ray_id = frozen.user_attrs.get("ray_trial_id")
                if ray_id not in experiment:
                    continue
                status, state = ("pruned", TrialState.PRUNED) if ray_id in stopped else ("not_started", TrialState.FAIL)
                set_trial_user_attr(study, frozen, "tune_tl_status", status)
                study.tell(frozen.number, state=state)
        except Exception as exc:  # bookkeeping must not fail the end of a search
            log.warning("could not record the stopped trials in the Optuna study: %s", exc)
