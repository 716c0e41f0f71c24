"""Checkpoint retention: a trial's weights stay on disk only while something can still need them.

A checkpoint is a trial's whole training state (model and optimizer: 14 MB for a Lite0 linear probe, up to
~60 MB for a Lite2 fine-tune), so keeping every trial's best and latest epoch grew a search by up to 120 MB
a trial. What a search keeps:

* **while a trial can still run** (running, waiting, retried after its worker died, or restored by a
  resume): its latest checkpoint, which a retry or a resume continues from, and its best epoch's: Ray's
  own ``CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="val_acc")`` keeps exactly those two;
* **once it ended** (its row is in the Parquet ``trials`` table; no scheduler here resumes an ended
  trial): only the best-epoch checkpoint of the top ``K`` trials by ``best_val_acc`` in the leaderboard's
  order (``store.ranking``), ``K`` = ``budget.keep_checkpoints`` (``--keep-checkpoints``, default 3) or the
  ``--recheck`` count when larger (``tune-tl export`` takes the winner by mean over seeds from among
  those), slimmed to the epoch, the weights and the metric history: what ``export`` and a resume read;
  the optimizer state, up to twice the weights, only served to go on training. Every other checkpoint of
  an ended trial is deleted as soon as the trial is outside the top ``K``: an ended trial's accuracy is
  final and later trials can only push it further down, so it can never come back among them.

``search.json`` lists what is kept (``checkpoints``, written when the search ends); ``tune-tl export
--trial ID`` of a trial whose weights were deleted says so and how to keep more
(``SearchRun.best_checkpoint_path``). Deleting runs at each of Ray's experiment snapshots, after the
Parquet sink has flushed (so a resume never needs an ended trial's checkpoint to rebuild its rows), and
at the end. Ray's snapshot may still name a deleted checkpoint as the latest of a trial that ended after
it: a resume settles that (``search.reconcile``).
"""

from __future__ import annotations

import logging

import pandas as pd
from ray.tune import Callback

from tune_tl.errors import TuneTLError
from tune_tl.store.ranking import ranked
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location

log = logging.getLogger(__name__)

#: Ray's statuses of a trial that will not run again in this driver.
_RAY_ENDED = ("TERMINATED", "ERROR")


def kept_trials(trials: pd.DataFrame, keep: int) -> list[str]:
    """The trials whose best-epoch checkpoint is kept: the first ``keep`` of the leaderboard, best first."""
    return list(ranked(trials)["trial_id"].head(keep)) if keep > 0 else []


class CheckpointRetention(Callback):
    """Driver-side Ray callback applying the policy in the module docstring; list it after the ``ParquetSink``.

    Picklable (Ray stores callbacks with the experiment): what it has settled is rebuilt from the folder.
    """

    def __init__(self, root: Location, keep: int):
        self.root, self.keep = root, keep
        self._reset()

    def _reset(self) -> None:
        self._settled: dict[str, str | None] = {}  # ended trial -> its kept checkpoint folder (None: nothing kept)
        self._ray_unfinished: set[str] | None = None  # trials this driver's Ray may still run (None: not known yet)

    def __getstate__(self):
        return {"root": self.root, "keep": self.keep}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    # -- Ray Tune hooks
    def setup(self, **info):
        self._reset()

    def on_step_end(self, iteration, trials, **info):
        self._ray_unfinished = {t.trial_id for t in trials if t.status not in _RAY_ENDED}

    def get_state(self):
        self.prune()
        return None

    def on_experiment_end(self, trials, **info):
        self.on_step_end(0, trials)
        trials_table = self.prune()
        if trials_table is not None:
            # Only now: a resumed Ray copies the search folder's .json files into its staging folder when it starts
            # and copies them back at every snapshot, so a search.json written during the run would be undone.
            keep = kept_trials(trials_table, self.keep)
            best = trials_table.set_index("trial_id")["best_val_acc"]
            SearchRun(self.root).update_metadata(checkpoints={
                "keep": self.keep,
                "policy": "the best epoch of the top `keep` ended trials by best_val_acc; a trial that can still run keeps "
                          "its latest and best epochs",
                "kept": [{"trial_id": t, "best_val_acc": float(best[t]), "path": f"{t}/{self._settled[t]}"}
                         for t in keep if self._settled.get(t)],
            })

    # -- the policy
    def prune(self) -> pd.DataFrame | None:
        """Delete what the policy no longer keeps; the trials table it followed (``None``: Ray has not said yet
        which trials it may still run)."""
        if self._ray_unfinished is None:
            return None
        run = SearchRun(self.root)
        trials = run.trials()
        keep = kept_trials(trials, self.keep)
        for trial_id in trials["trial_id"]:
            if trial_id in self._ray_unfinished:
                continue
            current = self._settled.get(trial_id, "unsettled")
            if current == "unsettled" or (current is not None and trial_id not in keep):
                self._settle(run, trial_id, trial_id in keep)
        return trials

    def _settle(self, run: SearchRun, trial_id: str, wanted: bool) -> list[str]:
        """Keep only the best-epoch checkpoint of ``trial_id`` (``wanted``) or none; the folders deleted."""
        best = None
        if wanted:
            try:
                best = run.best_checkpoint_path(trial_id)
            except TuneTLError as exc:  # nothing usable on disk (a trial that never checkpointed)
                log.info("checkpoint retention: %s", exc)
        deleted = run.prune_checkpoints(trial_id, keep=best)
        if best is not None:
            run.slim_checkpoint(best)  # an ended trial is never trained again: its weights and history are what is read
        if deleted:
            log.debug("checkpoint retention: trial %s: deleted %s", trial_id, ", ".join(deleted))
        self._settled[trial_id] = best.name if best is not None else None
        return deleted
