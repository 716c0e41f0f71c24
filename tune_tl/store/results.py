"""Arrow schemas for the results and the Ray Tune callback that writes them as Parquet.

Layout under ``<output>/<name>/``: ``epochs/`` (one row per trial and epoch) and ``trials/`` (one
row per finished trial), each a directory of Parquet part files that ``pd.read_parquet(dir)``
reads as one table. Every part is written under a hidden temporary name and renamed into place,
so a reader never sees a partial file; a result costs an append to a buffer, and a flush writes
only the rows since the last flush.

So that a long search stays a few files (reading 10,000 trials must take about a second, not one
open per flush), every ``compact_every`` flushes the small parts are merged into one, and at the
end of the search everything is merged. The merged part is renamed into place before its sources
are removed: a reader in between may see a row twice, and ``analysis.load_results`` keeps one.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from ray.tune import Callback

from tune_tl.errors import TuneTLError
from tune_tl.config.params import PARAMS, TrialConfig
from tune_tl.store.schema import EPOCH_SCHEMA, SCHEMA_VERSION, STATUSES, TRIAL_SCHEMA  # noqa: F401  (public names)
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location

log = logging.getLogger(__name__)


def write_table_atomic(rows: list[dict[str, Any]] | pa.Table, schema: pa.Schema, directory: Location | str | Path,
                       name: str | None = None) -> Location:
    """Write ``rows`` as one new Parquet part in ``directory`` (whole-file: see ``tune_tl.store.storage``)."""
    name = name or f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
    part = Location.parse(directory) / name
    part.write_parquet(table)
    return part


#: A compacted part is first written under this prefix, which pyarrow and pandas skip (a leading ``_``).
PENDING_PREFIX = "_pending-"
#: Schema metadata of a pending part: the names of the parts it replaces (JSON list).
_SOURCES_KEY = b"tune_tl.compacted_from"


def compact(directory: Location | str | Path, schema: pa.Schema, only_small: bool) -> None:
    """Merge part files into one, so a long search reads as a few files, not thousands.

    Idempotent and crash-safe: the merged part is written under a hidden name (``_pending-…``, which
    ``pd.read_parquet`` skips) that records its sources; then the sources are deleted and the part is
    renamed into place. A kill at any point leaves no row visible twice, and ``finish_pending`` (run
    first by every compaction and when a search starts or resumes) completes a compaction that was cut
    short. Rows doubled by older versions are dropped on the way (one per trial, or per trial and epoch).
    """
    directory = Location.parse(directory)
    finish_pending(directory)
    parts = [p for p in directory.files("part-", ".parquet") if not (only_small and p.name.startswith("part-c"))]
    if len(parts) < 2:
        return
    table = _unique_rows(pa.concat_tables(pq.read_table(p.path, schema=schema, filesystem=p.fs) for p in parts))
    name = f"part-c{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"  # 'part-c': already compacted
    metadata = {**(schema.metadata or {}), _SOURCES_KEY: json.dumps([p.name for p in parts]).encode()}
    pending = directory / f"{PENDING_PREFIX}{name}"
    pending.write_parquet(table.replace_schema_metadata(metadata))
    _finish(directory, pending)


def finish_pending(directory: Location | str | Path) -> int:
    """Complete compactions a kill interrupted: delete their sources, rename them into place."""
    directory = Location.parse(directory)
    pending = directory.files(PENDING_PREFIX, ".parquet")
    for part in pending:
        log.info("completing an interrupted compaction: %s", part)
        _finish(directory, part)
    return len(pending)


def _finish(directory: Location, pending: Location) -> None:
    metadata = pq.read_schema(pending.path, filesystem=pending.fs).metadata or {}
    for name in json.loads(metadata.get(_SOURCES_KEY, b"[]")):
        (directory / name).delete()  # already gone after an earlier, interrupted finish: fine
    pending.fs.move(pending.path, (directory / pending.name[len(PENDING_PREFIX):]).path)


def _unique_rows(table: pa.Table) -> pa.Table:
    """The first row of each trial (``trials``) or of each trial and epoch (``epochs``)."""
    keys = [c for c in ("trial_id", "epoch") if c in table.column_names]
    seen, keep = set(), []
    for i, key in enumerate(zip(*(table.column(c).to_pylist() for c in keys))):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return table if len(keep) == table.num_rows else table.take(pa.array(keep, pa.int64()))


def write_json_atomic(data: dict[str, Any], path: Location | str | Path) -> None:
    Location.parse(path).write_text(json.dumps(data, indent=2, default=str))


class ParquetSink(Callback):
    """Driver-side callback: buffers rows and writes them when Ray snapshots the experiment
    (``get_state``, about every 10 s: Ray's ``TUNE_GLOBAL_CHECKPOINT_S``), at the end of the
    experiment, and whenever ``flush_rows`` rows wait (a memory bound). Writing only at snapshots
    keeps the Parquet tables in step with what ``tune-tl resume`` restores: a trial that Ray's
    snapshot does not know yet never has rows on disk, so a resumed search cannot count it twice.

    A trial's status is ``completed`` if it ran ``max_epochs``, ``diverged`` if its loss went
    non-finite or blew up (``training.loop.diverged``), ``oom`` if the trainable reported running out of GPU memory (a final result with
    ``trial_status``), ``error`` if it raised, and ``pruned`` if it stopped earlier otherwise (ASHA).

    Idempotent per ``(trial_id, epoch)`` and per finished trial: at ``setup`` (a new or a resumed
    run) it reads what is already on disk, and a result or ending it has already written is not
    written again. Ray calls ``get_state`` whenever it snapshots the experiment; the sink flushes
    there, so every result behind a trial checkpoint in that snapshot is on disk before the snapshot
    is, and a driver crash loses only results that the resumed trials produce again.
    """

    def __init__(self, root: SearchRun | Location | str | Path, max_epochs: int, flush_rows: int = 50_000, flush_seconds: float = math.inf, compact_every: int = 128):
        self.root = root.root if isinstance(root, SearchRun) else Location.parse(root)
        self.max_epochs = max_epochs
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._epochs: list[dict] = []
        self._trials: list[dict] = []
        self._stats: dict[str, dict] = {}
        self._last_flush = time.monotonic()
        self.compact_every = compact_every
        self._parts_since_compact = 0
        self._seen: set[tuple[str, int]] = set()
        self._finished: set[str] = set()

    # -- Ray Tune hooks
    def setup(self, **info):
        """Rebuild what is already written (a resumed search): seen epochs, histories, ended trials."""
        self._seen, self._finished = set(), set()
        if not self.root.is_dir():
            return
        for name in ("epochs", "trials"):
            finish_pending(self.root / name)  # a compaction the last driver's death cut short
        run = SearchRun(self.root)
        self._finished = set(run.trials()["trial_id"])
        for trial_id, rows in run.epochs().sort_values(["trial_id", "epoch"]).groupby("trial_id"):
            start = rows["time"].min().timestamp() - float(rows["epoch_seconds"].iloc[0])
            history = [(int(r.epoch), r.val_acc, bool(r.diverged)) for r in rows.itertuples()]
            self._stats[trial_id] = {"start": start, "history": history}
            self._seen.update((trial_id, e) for e, _, _ in history)

    def get_state(self):
        self.flush()
        return None  # the state lives in the Parquet files, rebuilt by ``setup``

    def on_trial_start(self, iteration, trials, trial, **info):
        self._stats.setdefault(trial.trial_id, {"start": time.time(), "history": []})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        stats = self._stats.setdefault(trial.trial_id, {"start": time.time(), "history": []})
        if "trial_status" in result:  # the trainable's own verdict (oom), not an epoch
            stats["status"], stats["error"] = result["trial_status"], result.get("error")
            return
        if result.get("epoch") is None:
            return  # not an epoch result (nothing else reports today; be safe)
        key = (trial.trial_id, int(result["epoch"]))
        if key in self._seen:  # re-run after a restore from an older checkpoint
            return
        self._seen.add(key)
        row = {name: result.get(name) for name in EPOCH_SCHEMA.names}
        row["trial_id"] = trial.trial_id
        row["time"] = int(time.time() * 1000)
        stats["history"].append((row["epoch"], row["val_acc"], bool(row["diverged"])))
        stats["node"] = (result.get("node_id"), result.get("node_ip"))
        stats["workers"] = result.get("workers")
        self._epochs.append(row)
        self._maybe_flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, error=_error_text(trial))

    def on_experiment_end(self, trials, **info):
        self.flush()
        for folder, schema in self._tables():
            if folder.is_dir():
                compact(folder, schema, only_small=False)

    # -- internals
    def _tables(self):
        run = SearchRun(self.root)
        return ((run.epochs_dir, EPOCH_SCHEMA), (run.trials_dir, TRIAL_SCHEMA))

    def _finish(self, trial, error: str | None) -> None:
        stats = self._stats.pop(trial.trial_id, {"start": time.time(), "history": []})
        if trial.trial_id in self._finished:
            return
        self._finished.add(trial.trial_id)
        history = sorted(stats["history"])
        # A NaN accuracy is no accuracy: null in the table, never a number that sorts.
        accs = [(acc, epoch) for epoch, acc, _ in history if acc is not None and math.isfinite(acc)]
        best_acc, best_epoch = max(accs) if accs else (None, None)
        epochs_run = max((e for e, _, _ in history), default=0)
        if error is not None:
            status = "error"
        elif stats.get("status"):
            status, error = stats["status"], stats.get("error")
        elif history and history[-1][2]:
            status = "diverged"
            error = f"training loss diverged (non-finite, or far above its first epoch's) at epoch {history[-1][0]}"
        elif epochs_run >= self.max_epochs:
            status = "completed"
        else:
            status = "pruned"
        row = _effective_config(trial.config)
        row.update(
            trial_id=trial.trial_id,
            status=status,
            best_val_acc=best_acc,
            last_val_acc=history[-1][1] if history and _finite(history[-1][1]) else None,
            best_epoch=best_epoch,
            epochs_run=epochs_run,
            wall_seconds=time.time() - stats["start"],
            error=error,
            node_id=stats.get("node", (None, None))[0],
            node_ip=stats.get("node", (None, None))[1],
            workers=stats.get("workers"),
        )
        self._trials.append(row)
        acc = f"{best_acc:.4f}" if best_acc is not None else "n/a"
        log.debug("trial %s %s after %d epoch(s), best val_acc %s", trial.trial_id, status, epochs_run, acc)  # the progress view prints it
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        """Flush by size (or age, if ``flush_seconds`` is finite): a result costs an append."""
        rows = len(self._epochs) + len(self._trials)
        if rows >= self.flush_rows or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows now (also called on every trial end and at the experiment's end)."""
        if self._epochs:
            write_table_atomic(self._epochs, EPOCH_SCHEMA, SearchRun(self.root).epochs_dir)
            self._epochs = []
        if self._trials:
            write_table_atomic(self._trials, TRIAL_SCHEMA, SearchRun(self.root).trials_dir)
            self._trials = []
            self._parts_since_compact += 1
        self._last_flush = time.monotonic()
        if self._parts_since_compact >= self.compact_every:
            for folder, schema in self._tables():
                if folder.is_dir():
                    compact(folder, schema, only_small=True)
            self._parts_since_compact = 0


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _effective_config(config: dict) -> dict:
    """The parameters the trial actually trained with: defaults filled in, inactive ones null."""
    try:
        return TrialConfig.from_dict(config).to_dict()
    except TuneTLError:  # a bad config errors in the trial; record what was asked for
        return {name: config.get(name) for name in PARAMS}


def _error_text(trial) -> str:
    """The last line of the trial's error (the exception), without Ray's long traceback."""
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:2000] if lines else "unknown error"
