"""The end of a search that its time budget (``budget.time``, ``--time-budget``) cut short.

Ray's ``TuneConfig(time_budget_s=...)`` stops starting trials and stops the running ones, but it
marks them TERMINATED without the ``on_trial_complete`` calls a normally ended trial gets, so neither
the Parquet sink nor the Optuna study would hear that they ended: no ``trials`` row, and Optuna trials
left RUNNING forever. :class:`CloseOpenTrials` runs at the experiment's end (before the sink's own
final flush) and ends every trial that started but was never ended: the sink writes its row (status
``pruned``: stopped before ``max_epochs``, with every epoch it reported) and the study records it as
PRUNED with its intermediate values.
"""

from __future__ import annotations

import logging

from ray.tune import Callback

log = logging.getLogger(__name__)


class CloseOpenTrials(Callback):
    """Driver-side Ray callback; list it *before* the ``ParquetSink`` in ``RunConfig(callbacks=...)``."""

    def __init__(self, sink, study_storage: str | None = None, study_name: str | None = None):
        # The study by its address, not the searcher object: a restored Tuner unpickles its own copy.
        self.sink, self.study_storage, self.study_name = sink, study_storage, study_name

    def on_experiment_end(self, trials, **info):
        # The sink's per-trial bookkeeping holds exactly the trials it saw start and not yet end.
        open_ids = set(getattr(self.sink, "_stats", {}))
        closed = [t.trial_id for t in trials if t.trial_id in open_ids]
        for trial in trials:
            if trial.trial_id in open_ids:
                self.sink.on_trial_complete(0, trials, trial)
        if closed:
            log.info("time budget: %d running trial(s) stopped and recorded as pruned", len(closed))
            self._prune_in_study(set(closed))

    def _prune_in_study(self, ray_ids: set[str]) -> None:
        if not self.study_storage:
            return
        import optuna
        from optuna.trial import TrialState

        try:
            study = optuna.load_study(study_name=self.study_name, storage=self.study_storage)
            for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if frozen.user_attrs.get("ray_trial_id") in ray_ids:
                    study._storage.set_trial_user_attr(frozen._trial_id, "tune_tl_status", "pruned")
                    study.tell(frozen.number, state=TrialState.PRUNED)
        except Exception as exc:  # bookkeeping must not fail the end of a search
            log.warning("could not record the stopped trials in the Optuna study: %s", exc)
