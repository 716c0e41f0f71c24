"""Fault injection for the tests that kill processes; imported at start-up by every Python process of one search.

``tests/faults.py``'s ``Driver`` puts this folder first on ``PYTHONPATH`` of the search it starts, so the
driver and each of Ray's worker processes (which inherit the driver's environment) import this module
before anything else. Always, when ``tune_tl.models.registry`` is imported, the tests' tiny backbone
(``tests/tiny_backbone.py``) is registered, as the pytest process registers it. Nothing else here runs unless
``TUNE_TL_FAULT_DIR`` is set; then, as each tune_tl (or
Ray, or Optuna) module below is imported, the functions named in ``_PATCHES`` are wrapped:

* every trial writes its worker's pid to ``<dir>/<trial_id>.pid`` and ``<trial_id> <first epoch>`` to
  ``<dir>/starts.log`` when it starts (or is retried from a checkpoint);
* ``TUNE_TL_FAULT_OOM_AT_EPOCH=K``: a trial raises a simulated ``torch.cuda.OutOfMemoryError`` when it is
  about to train epoch K;
* ``TUNE_TL_FAULT_AT=MOMENT``: the first process of the search to reach ``MOMENT`` writes
  ``<dir>/reached`` and then stops there (it sleeps until the test SIGKILLs the search's processes), so the
  test kills the search at exactly that point, without guessing with sleeps. The moments are the keys of
  ``MOMENTS``.

Production code knows nothing of this: the hooks live in the tests.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import threading
import time
from pathlib import Path

DIR_ENV, AT_ENV, OOM_ENV = "TUNE_TL_FAULT_DIR", "TUNE_TL_FAULT_AT", "TUNE_TL_FAULT_OOM_AT_EPOCH"

#: Where each moment is: the process it happens in, and what has just happened (or is half done).
MOMENTS = {
    "first_report": "worker: the first trial's first epoch is trained and checkpointed, not yet reported",
    "mid_epoch": "worker: the first trial to train a second epoch is between its training and its validation",
    "checkpoint_copy": "worker: Ray is half-way through copying a trial's second checkpoint into its folder",
    "snapshot_upload": "driver (resume): Ray is uploading its snapshot into the search folder again; each file it rewrites is empty",
    "checkpoint_registered": "driver: Ray registered a trial's better checkpoint and deleted the older one its snapshot names",
    "after_suggest": "driver: the search's second trial was asked of the study, Ray has not snapshotted it",
    "after_complete": "driver: the first completed trial was told to the study, not yet to the Parquet sink",
    "after_prune": "driver: the first pruned trial was told to the study, not yet to the Parquet sink",
    "study_write": "driver: a trial's ending is flushed into the study's SQLite transaction, not committed",
    "snapshot_flush": "driver: the sink flushed a finished trial's rows; Ray has not copied its snapshot yet",
    "retention": "driver: retention deleted the checkpoints of one ended trial, not yet of the others",
    "last_trial": "driver: the last trial reported its first epoch",
    "compaction": "driver: a merged Parquet part is written under its pending name, its sources not deleted",
    "reconcile": "driver (resume): the reconcile wrote the first rebuilt Parquet rows, nothing else yet",
    "between_probes": "driver: stage 0's first probe is recorded (rows, head, search.json), the second not begun",
}


def _dir() -> Path:
    return Path(os.environ[DIR_ENV])


def reached(moment: str, detail: str = "") -> None:
    """Stop here for good if ``moment`` is the one armed and no process of this search has reached it yet."""
    if os.environ.get(AT_ENV) != moment:
        return
    try:
        fd = os.open(_dir() / "reached", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # another process got there first; this one carries on until the kill
    os.write(fd, f"{moment} pid {os.getpid()} {detail}\n".encode())
    os.close(fd)
    while True:  # the test SIGKILLs every process of the search now
        time.sleep(3600)


def _count(name: str) -> int:
    """How many times this process has passed ``name`` (1 the first time)."""
    _COUNTS[name] = _COUNTS.get(name, 0) + 1
    return _COUNTS[name]


_COUNTS: dict[str, int] = {}
_START: dict[str, int] = {}  # the epoch the trial running in this process started (or was retried) at
_LOCAL = threading.local()


# ------------------------------------------------------------------------------ worker patches


def _patch_trainable(module) -> None:
    import torch
    from ray import tune

    load, fit = module._load_checkpoint, module.fit

    def _load_checkpoint(checkpoint):
        state = load(checkpoint)
        _COUNTS.clear()  # counts are per trial start (Ray may reuse a worker process for the next trial)
        trial_id = tune.get_context().get_trial_id()
        (_dir() / f"{trial_id}.pid").write_text(str(os.getpid()))
        _START["epoch"] = state["epoch"] + 1 if state else 1
        with open(_dir() / "starts.log", "a") as f:
            f.write(f"{trial_id} {_START['epoch']}\n")
        return state

    def simulated_oom(epoch: int):
        at = os.environ.get(OOM_ENV)
        if at and int(at) == epoch:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated by the test at epoch {at})")

    def patched_fit(model, split, cfg, *args, resume=None, on_state=None, **kwargs):
        simulated_oom(resume["epoch"] + 1 if resume else 1)

        def on_state_then(metrics, state):
            on_state(metrics, state)
            simulated_oom(metrics.epoch + 1)

        return fit(model, split, cfg, *args, resume=resume, on_state=on_state_then if on_state else None, **kwargs)

    original_report = module.tune.report

    class _Tune:  # the trainable's ``tune``, with ``report`` stopping at ``first_report``
        def __getattr__(self, name):
            return getattr(tune, name)

        @staticmethod
        def report(*args, **kwargs):
            if _count("report") == 1 and not _starts():
                reached("first_report")
            return original_report(*args, **kwargs)

    module._load_checkpoint, module.fit, module.tune = _load_checkpoint, patched_fit, _Tune()


def _starts() -> list[str]:
    """``starts.log`` lines other than this process's first trial start (empty: this is the search's first trial)."""
    lines = (_dir() / "starts.log").read_text().split("\n") if (_dir() / "starts.log").exists() else []
    return [line for line in lines if line.strip()][1:]


def _patch_epoch_inputs(module) -> None:
    def stopping(evaluate):
        def patched(*args, **kwargs):
            if _count("evaluate") == 2 and _START.get("epoch") == 1:  # validating its second epoch, not a retry
                reached("mid_epoch")
            return evaluate(*args, **kwargs)
        return patched

    module.evaluate_split, module.evaluate_cached = stopping(module.evaluate_split), stopping(module.evaluate_cached)


def _patch_ray_storage(module) -> None:
    copy = module._pyarrow_fs_copy_files

    def _pyarrow_fs_copy_files(source, destination, *args, **kwargs):
        result = copy(source, destination, *args, **kwargs)
        if os.environ.get(AT_ENV) == "checkpoint_copy" and str(destination).endswith("/checkpoint_000001"):
            state = Path(destination) / "state.pt"
            if state.is_file():
                with open(state, "r+b") as f:
                    f.truncate(state.stat().st_size // 2)  # what a kill in the middle of the copy leaves
            reached("checkpoint_copy", str(destination))
        if os.environ.get(AT_ENV) == "snapshot_upload" and str(source).endswith("driver_artifacts"):
            _cut_short_upload(Path(source), Path(destination))
        return result

    module._pyarrow_fs_copy_files = _pyarrow_fs_copy_files


def _cut_short_upload(staging: Path, search: Path) -> None:
    """Leave what a kill during a resumed search's second or later snapshot upload leaves: every file of the search
    folder that the upload rewrites (copies in place), empty."""
    rewritten = [search / p.name for p in staging.iterdir() if p.is_file() and (search / p.name).is_file()]
    this_session = sorted(p.name for p in staging.glob("experiment_state-*.json"))[-1:]
    earlier = {p.name for p in search.glob("experiment_state-*.json")} - set(this_session)
    if not (earlier and rewritten):  # not a resume, or this session's first upload (its files are not in the folder yet)
        return
    for path in rewritten:
        path.write_bytes(b"")
    reached("snapshot_upload", " ".join(sorted(p.name for p in rewritten)))


# ------------------------------------------------------------------------------ driver patches


def _patch_ray_checkpoints(module) -> None:
    manager = module._CheckpointManager
    register = manager.register_checkpoint

    def register_checkpoint(self, checkpoint_result):
        before = len(self._checkpoint_results)
        register(self, checkpoint_result)
        if len(self._checkpoint_results) <= before:  # it deleted one: the snapshot's latest, until the next snapshot
            reached("checkpoint_registered", str(checkpoint_result.checkpoint.path))

    manager.register_checkpoint = register_checkpoint



def _patch_sampler(module) -> None:
    cls = module.HonestOptunaSearch
    suggest, complete = cls.suggest, cls.on_trial_complete

    def patched_suggest(self, trial_id):
        config = suggest(self, trial_id)
        if config is not None and len(self._ot_trials) >= 2:
            reached("after_suggest", trial_id)
        return config

    def patched_complete(self, trial_id, result=None, error=False):
        fresh = trial_id not in self._completed_trials and trial_id in self._ot_trials
        complete(self, trial_id, result, error)
        if fresh:
            status = self._ot_trials[trial_id].user_attrs.get("tune_tl_status")
            if status == "completed":
                reached("after_complete", trial_id)
            elif status == "pruned":
                reached("after_prune", trial_id)

    cls.suggest, cls.on_trial_complete = patched_suggest, patched_complete


def _patch_results(module) -> None:
    sink, finish = module.ParquetSink, module._finish
    get_state, on_result = sink.get_state, sink.on_trial_result

    def patched_get_state(self):
        had_trials = bool(self._trials)
        state = get_state(self)
        if had_trials:
            reached("snapshot_flush")
        return state

    def patched_on_result(self, iteration, trials, trial, result, **info):
        on_result(self, iteration, trials, trial, result, **info)
        total = int(os.environ.get("TUNE_TL_FAULT_TRIALS", "0"))
        if total and len(trials) >= total and trial is trials[-1] and result.get("epoch") == 1:
            reached("last_trial", trial.trial_id)

    def patched_finish(directory, pending):
        reached("compaction", pending.name)
        return finish(directory, pending)

    sink.get_state, sink.on_trial_result, module._finish = patched_get_state, patched_on_result, patched_finish


def _patch_optuna_rdb(module) -> None:
    from optuna.trial import TrialState
    from sqlalchemy.orm import Session

    storage = module.RDBStorage
    set_state = storage.set_trial_state_values
    commit = Session.commit

    def set_trial_state_values(self, trial_id, state, values=None):
        _LOCAL.ending = state.is_finished() and state != TrialState.FAIL
        try:
            return set_state(self, trial_id, state, values)
        finally:
            _LOCAL.ending = False

    def patched_commit(self):
        if getattr(_LOCAL, "ending", False) and os.environ.get(AT_ENV) == "study_write":
            self.flush()  # the trial's new state is in SQLite's transaction, not committed
            reached("study_write")
        return commit(self)

    storage.set_trial_state_values, Session.commit = set_trial_state_values, patched_commit


def _patch_retention(module) -> None:
    retention = module.CheckpointRetention
    settle = retention._settle

    def _settle(self, run, trial_id, wanted):
        deleted = settle(self, run, trial_id, wanted)
        if deleted:
            reached("retention", f"{trial_id}: {deleted}")
        return deleted

    retention._settle = _settle


def _patch_reconcile(module) -> None:
    write = module._write_rows

    def _write_rows(*args, **kwargs):
        write(*args, **kwargs)
        reached("reconcile")

    module._write_rows = _write_rows


def _patch_probes(module) -> None:
    measure = module.measure_probe

    def measure_probe(backbone, *args, **kwargs):
        if _count("probe") == 2:
            reached("between_probes")
        with open(_dir() / "probes.log", "a") as f:  # every probe measured, by any driver of this search
            f.write(f"{backbone.name}\n")
        return measure(backbone, *args, **kwargs)

    module.measure_probe = measure_probe


_PATCHES = {
    "tune_tl.search.probes": _patch_probes,
    "tune_tl.search.trainable": _patch_trainable,
    "tune_tl.training.epoch_inputs": _patch_epoch_inputs,
    "ray.train._internal.storage": _patch_ray_storage,
    "ray.train._internal.checkpoint_manager": _patch_ray_checkpoints,
    "tune_tl.search.sampler": _patch_sampler,
    "tune_tl.store.results": _patch_results,
    "optuna.storages._rdb.storage": _patch_optuna_rdb,
    "tune_tl.search.retention": _patch_retention,
    "tune_tl.search.reconcile": _patch_reconcile,
}


def _register_tiny_backbone(module) -> None:
    """The tests' tiny backbone (``tests/tiny_backbone.py``), registered as pytest's processes register it: a ``tune-tl``
    process started by a test never ran that registration."""
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    import tiny_backbone  # noqa: F401  (registers itself)


#: Installed in every process, faults or not: the tests' searches may name the tiny backbone.
_ALWAYS = {"tune_tl.models.registry": _register_tiny_backbone}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Runs ``patches[name](module)`` right after the module ``name`` has been executed."""

    def __init__(self, patches):
        self.patches = patches

    def find_spec(self, name, path, target=None):
        if name not in self.patches:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            self.patches[name](module)

        spec.loader.exec_module = exec_then_patch
        return spec


sys.meta_path.insert(0, _PatchAfterImport({**_ALWAYS, **_PATCHES} if os.environ.get(DIR_ENV) else _ALWAYS))
