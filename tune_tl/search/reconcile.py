"""Make a killed search's three records agree before ``tune-tl resume`` lets Ray continue it.

A search keeps three records, each written at its own pace, so a driver killed at any moment leaves
them out of step:

* the **Optuna study** (``optuna.db``) is written the moment the driver hears an epoch or a trial's end;
* the **Parquet tables** are written at each of Ray's experiment snapshots (and at the end);
* **Ray's experiment snapshot** (trials, their checkpoints, the searcher's state) is staged at each
  snapshot and copied into the search folder in the background.

So the study can be ahead of the tables, and the tables ahead of the snapshot Ray restores. Restoring as
it was, Ray would re-run trials the study already closed (Optuna refuses to update a finished trial),
and a trial Ray never snapshotted would be sampled again on top of its recorded twin. :func:`reconcile`
settles every trial by one rule per fact before Ray starts:

* **Which trials exist:** the trials of Ray's snapshot, plus any trial Ray had not snapshotted whose
  ending the study (or the tables) recorded: that one is *adopted* (Ray's trial generator counts it, so
  the search still ends with exactly its number of trials). A trial Ray never snapshotted and nobody
  saw end is *discarded*: its Optuna trial is failed (``tune_tl_status`` = ``orphaned``), its epoch rows
  and checkpoints are deleted, and Ray samples a new trial in its place.
* **How a trial ended** (its status and value): the study, which hears it first; the tables when the
  study missed it. A trial that ended is never trained again: Ray restores it as unfinished, and the
  trainable returns at once for the ids in :attr:`Reconciled.ended`.
* **A trial's epochs:** the Parquet rows, completed from the trial's last checkpoint (whose ``history``
  holds every epoch's metrics up to it) and, for epochs past it, the study's intermediate values.

Every step is idempotent, so a resume killed while it reconciles is reconciled again by the next one.

    >>> reconciled = reconcile(SearchRun("results/demo"), study, plan.space, max_epochs=4)  # doctest: +SKIP
    >>> reconciled.ended, reconciled.adopted                                                             # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import PurePosixPath

import optuna
import pandas as pd
from optuna.trial import FixedTrial, FrozenTrial, TrialState
from ray.tune.callback import CallbackList
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Trial
from ray.tune.search import Searcher, SearchGenerator

from tune_tl.compat import experiment_snapshot, set_generator_count, set_intermediate_value, set_trial_user_attr
from tune_tl.search.sampler import optuna_outcome
from tune_tl.store.results import compact, epoch_row, finish_pending, trial_row, write_table_atomic
from tune_tl.store.schema import EPOCH_SCHEMA, STATUSES, TRIAL_SCHEMA
from tune_tl.store.search_run import SearchRun
from tune_tl.store.trial_record import TrialRecord

log = logging.getLogger(__name__)

#: Ray's statuses of a trial it will not run again on resume (``resume_errored=False`` leaves errored ones).
RAY_ENDED = ("TERMINATED", "ERROR")
#: Ray's snapshot files in a search folder: the trials, the trial generator, the searcher, the callbacks.
RAY_SNAPSHOT_FILES = tuple(cls.CKPT_FILE_TMPL.format("*") for cls in (TuneController, SearchGenerator, Searcher, CallbackList))
#: The study's user attributes the Optuna bridge writes (``search.sampler.HonestOptunaSearch``).
RAY_ID_ATTR, STATUS_ATTR, ERROR_ATTR = "ray_trial_id", "tune_tl_status", "tune_tl_error"
#: User attributes of trials told to the study from outside Ray (a warm start's earlier trials, probes): they are
#: not trials of this search's Ray, so reconcile leaves them alone, whatever their ``ray_trial_id``.
SEED_ATTRS = ("warm_start_from", "probe")
#: The ``error`` of a rebuilt row whose trial Ray recorded as failed (its message is in Ray's error file only).
RAISED = "the trial raised; its traceback is in Ray's error file in the trial's folder"


@dataclass(frozen=True)
class Reconciled:
    """What the resumed Ray must be told; the rest is already written."""

    #: Trials Ray restores as unfinished whose ending is recorded: the trainable returns at once for them.
    ended: frozenset[str]
    #: Trials Ray continues from their last checkpoint.
    will_run: frozenset[str]
    #: Trials the search has made: those of Ray's snapshot plus the adopted ones (the trial generator's count).
    created: int
    adopted: tuple[str, ...] = ()
    discarded: tuple[str, ...] = ()
    rebuilt: tuple[str, ...] = ()

    def apply_to_generator(self, generator) -> None:
        """Make a restored Ray ``SearchGenerator`` (and its ``ConcurrencyLimiter``) agree with the trials Ray restored:
        its saved counters may come from a different snapshot than the trials if the copy of the snapshot was cut short."""
        set_generator_count(generator, self.created, set(self.will_run))


def reconcile(run: SearchRun, study: optuna.Study, space: Callable, max_epochs: int) -> Reconciled:
    """Settle every trial of the search in ``run`` between ``study``, the Parquet tables and Ray's snapshot.

    Args:
        study: The search's study (its local SQLite copy for an object store).
        space: The search's define-by-run function: rebuilds the config of a trial Ray never snapshotted.
        max_epochs: The trials' epoch budget (a trial that ran it completed).
    """
    for folder in (run.epochs_dir, run.trials_dir):
        finish_pending(folder)  # a compaction the last driver's death cut short
    drop_cut_short_snapshots(run)
    snapshot = ray_snapshot(run)
    finished = set(run.trials()["trial_id"])
    epochs = run.epochs()
    ended, adopted, discarded, rebuilt = set(), [], [], []
    for frozen in study.get_trials(deepcopy=False):
        ray_id = frozen.user_attrs.get(RAY_ID_ATTR)
        if any(attr in frozen.user_attrs for attr in SEED_ATTRS):
            continue
        if ray_id is None:
            if frozen.state == TrialState.RUNNING:  # asked of the study, killed before Ray was told its id
                _fail(study, frozen, "orphaned")
            continue
        known = ray_id in snapshot
        if frozen.state.is_finished() and frozen.user_attrs.get(STATUS_ATTR) not in STATUSES:
            if not known:  # failed on purpose (orphaned before): finish removing it, if a kill cut that short
                _discard(run, study, frozen, epochs)
            continue  # not_started (a time budget's end): Ray had created it, it never ran, it has no rows
        ray_ended = known and snapshot[ray_id].status in RAY_ENDED
        if not (frozen.state.is_finished() or ray_id in finished or ray_ended):
            if not known:
                _discard(run, study, frozen, epochs)
                discarded.append(ray_id)
            continue  # Ray continues it from its last checkpoint
        if known and not ray_ended:
            ended.add(ray_id)
        elif not known:
            adopted.append(ray_id)
        if ray_id not in finished:
            config = snapshot[ray_id].config if known else replayed_config(space, frozen)
            _rebuild(run, frozen, config, epochs[epochs["trial_id"] == ray_id], max_epochs,
                     raised=RAISED if ray_ended and snapshot[ray_id].status == "ERROR" else None)
            rebuilt.append(ray_id)
        if not frozen.state.is_finished():
            _tell_from_tables(run, study, frozen)
    will_run = {t for t, trial in snapshot.items() if trial.status not in RAY_ENDED} - ended
    by_ray = {t.user_attrs[RAY_ID_ATTR]: t for t in study.get_trials(deepcopy=False)
              if RAY_ID_ATTR in t.user_attrs and not any(attr in t.user_attrs for attr in SEED_ATTRS)}
    for trial_id in sorted(ended | will_run):
        _make_restorable(run, study, by_ray.get(trial_id), snapshot[trial_id], trial_id in ended, epochs[epochs["trial_id"] == trial_id])
    reconciled = Reconciled(frozenset(ended), frozenset(will_run), len(snapshot) + len(adopted), tuple(adopted), tuple(discarded),
                            tuple(rebuilt))
    if ended or adopted or discarded or rebuilt:
        log.info("resume: %d trial(s) ended after Ray's last snapshot (not run again), %d adopted, %d discarded, "
                 "%d rebuilt in the Parquet tables", len(ended), len(adopted), len(discarded), len(rebuilt))
    return reconciled


def drop_cut_short_snapshots(run: SearchRun) -> None:
    """Delete Ray's snapshot files that a kill left empty, so that Ray restores its newest complete snapshot.

    Ray uploads each snapshot file by rewriting it in place, so a driver killed during an upload leaves it empty;
    the previous session's files, which this session never rewrites (``SampleTarget.restore_from_dir``), stay whole.
    """
    for file in run.root.files():
        if any(fnmatch(file.name, pattern) for pattern in RAY_SNAPSHOT_FILES) and file.size() == 0:
            log.info("resume: Ray's %s was cut short by the kill; Ray restores its snapshot before it", file.name)
            file.delete()


def ray_snapshot(run: SearchRun) -> dict[str, Trial]:
    """The trials of Ray's newest experiment snapshot in the search folder, by id: what ``Tuner.restore`` restores."""
    state = experiment_snapshot(run.root.fs, run.root.path)
    if state is None:
        return {}
    trials = {}
    for json_state, run_metadata in state["trial_data"]:
        trial = Trial.from_json_state(json_state, stub=True)
        trial.restore_run_metadata(run_metadata)
        trials[trial.trial_id] = trial
    return trials


def replayed_config(space: Callable, frozen: FrozenTrial) -> dict:
    """The config Ray's ``OptunaSearch`` built for ``frozen``: its sampled values plus what ``space`` returns for them."""
    constants = space(FixedTrial(dict(frozen.params), number=frozen.number)) or {}
    return {**frozen.params, **constants}


def _make_restorable(run: SearchRun, study: optuna.Study, frozen: FrozenTrial | None, trial: Trial, ended: bool,
                     rows: pd.DataFrame) -> None:
    """Make sure the checkpoint Ray's snapshot names as ``trial``'s latest can be restored.

    Ray checks that folder exists before it restores the trial, and it may be gone: Ray's own checkpoint
    manager deletes a trial's older checkpoint the moment it registers a better one, and retention deletes an
    ended trial's, both possibly after the snapshot was copied here. An ended trial gets an empty folder (the
    trainable returns at once without reading it; retention removes it later). A trial that goes on continues
    from its newest complete checkpoint, copied there; the epochs in it that the tables or the study lack are
    added to both, so they agree on what the trial has done.
    """
    if trial.checkpoint is None:
        return
    folder = run.trial_dir(trial.trial_id) / PurePosixPath(trial.checkpoint.path).name
    if run.checkpoint_epoch(folder) is not None:
        return  # restored as it was
    if ended:
        if not folder.exists():
            folder.mkdir()
        return
    newest = _newest_checkpoint(run, trial.trial_id, up_to=None)
    if newest is None:
        log.warning("trial %s: no readable checkpoint to continue from; Ray will report it failed", trial.trial_id)
        return
    run.copy_checkpoint(newest, folder)
    history, end = _checkpoint_history(run, newest)
    new = _epoch_rows(trial.trial_id, {int(m["epoch"]): m for m in history}, _record(rows), end)
    if new:
        _write_rows(run, new, [])
    for m in history if frozen is not None else ():
        value = m.get("val_acc")
        if int(m["epoch"]) not in frozen.intermediate_values and isinstance(value, float) and value == value:
            set_intermediate_value(study, frozen, int(m["epoch"]), value)
    log.info("trial %s continues from its epoch-%d checkpoint (Ray's snapshot named one deleted since)", trial.trial_id,
             int(history[-1]["epoch"]) if history else 0)


def _rebuild(run: SearchRun, frozen: FrozenTrial, config: dict, rows: pd.DataFrame, max_epochs: int, raised: str | None) -> None:
    """Write the rows of an ended trial the tables lack: its epochs from its checkpoint (and the study), then its trial row."""
    ray_id = frozen.user_attrs[RAY_ID_ATTR]
    last = max(frozen.intermediate_values, default=None)
    newest = _newest_checkpoint(run, ray_id, up_to=last)
    history, end = _checkpoint_history(run, newest) if newest is not None else ([], time.time())
    metrics = {int(m["epoch"]): m for m in history}
    for step, value in frozen.intermediate_values.items():
        metrics.setdefault(int(step), {"epoch": int(step), "val_acc": value})
    record = _record(rows)
    new = _epoch_rows(ray_id, metrics, record, end)
    status = frozen.user_attrs.get(STATUS_ATTR)
    error = frozen.user_attrs.get(ERROR_ATTR)
    if status not in STATUSES:
        status, error = record.verdict(max_epochs, raised)
    seconds = sum(float(m.get("epoch_seconds") or 0.0) for m in metrics.values())
    _write_rows(run, new, [trial_row(ray_id, config, record, status, error, wall_seconds=seconds)])


def _epoch_rows(trial_id: str, metrics: dict[int, dict], record: TrialRecord, end: float) -> list[dict]:
    """Rows for the epochs in ``metrics`` that ``record`` lacks (recording them); the last epoch ended at ``end``."""
    new = []
    for epoch in sorted(metrics, reverse=True):
        m = metrics[epoch]
        if record.add_epoch(epoch, m.get("val_acc"), bool(m.get("diverged", False))):
            new.append(epoch_row(trial_id, m, end))
        end -= float(m.get("epoch_seconds") or 0.0)
    return new[::-1]


def _record(rows: pd.DataFrame) -> TrialRecord:
    record = TrialRecord()
    for r in rows.itertuples():
        record.add_epoch(int(r.epoch), r.val_acc, bool(r.diverged))
    return record


def _write_rows(run: SearchRun, epoch_rows: list[dict], trial_rows: list[dict]) -> None:
    """Epoch rows first, then the trial row, as the Parquet sink writes them."""
    if epoch_rows:
        write_table_atomic(epoch_rows, EPOCH_SCHEMA, run.epochs_dir)
    if trial_rows:
        write_table_atomic(trial_rows, TRIAL_SCHEMA, run.trials_dir)


def _newest_checkpoint(run: SearchRun, trial_id: str, up_to: int | None):
    """The trial's readable checkpoint of the latest epoch (at most ``up_to``, when given), or ``None``."""
    newest = None
    for folder in run.checkpoint_paths(trial_id):
        summary = run.checkpoint_epoch(folder)
        if summary is not None and (up_to is None or summary[0] <= up_to) and (newest is None or summary[0] > newest[0]):
            newest = (summary[0], folder)
    return None if newest is None else newest[1]


def _checkpoint_history(run: SearchRun, folder) -> tuple[list[dict], float]:
    """The metric history in the checkpoint in ``folder``, and when that checkpoint was written."""
    state = run.checkpoint_state(folder)
    return list(state["history"]), run.checkpoint_time(folder) or time.time()


def _tell_from_tables(run: SearchRun, study: optuna.Study, frozen: FrozenTrial) -> None:
    """Tell the study how a trial ended when only the tables recorded it (the driver died while the study was written)."""
    row = run.trials().set_index("trial_id").loc[frozen.user_attrs[RAY_ID_ATTR]]
    epochs = run.epochs()
    record = _record(epochs[epochs["trial_id"] == row.name])
    for epoch, acc, _ in record.history:
        if acc is not None and epoch not in frozen.intermediate_values:
            set_intermediate_value(study, frozen, epoch, acc)
    set_trial_user_attr(study, frozen, STATUS_ATTR, row["status"])
    state, value = optuna_outcome(row["status"], record)
    study.tell(frozen.number, value, state=state)


def _discard(run: SearchRun, study: optuna.Study, frozen: FrozenTrial, epochs: pd.DataFrame) -> None:
    """Remove every trace of a trial Ray never snapshotted and nobody saw end; Ray samples another in its place."""
    ray_id = frozen.user_attrs[RAY_ID_ATTR]
    if frozen.state == TrialState.RUNNING:
        _fail(study, frozen, "orphaned")
    if ray_id in set(epochs["trial_id"]):
        compact(run.epochs_dir, EPOCH_SCHEMA, only_small=False, drop=frozenset({ray_id}))
    run.prune_checkpoints(ray_id)


def _fail(study: optuna.Study, frozen: FrozenTrial, reason: str) -> None:
    set_trial_user_attr(study, frozen, STATUS_ATTR, reason)
    study.tell(frozen.number, state=TrialState.FAIL)
