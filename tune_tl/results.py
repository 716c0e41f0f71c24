"""Arrow schemas for the results and the Ray Tune callback that writes them as Parquet.

Layout under ``<output>/<name>/``: ``epochs/`` (one row per trial and epoch) and ``trials/`` (one
row per finished trial), each a directory of Parquet part files that ``pd.read_parquet(dir)``
reads as one table. Every part is written under a hidden temporary name and renamed into place,
so a reader never sees a partial file; a result costs an append to a buffer, and a flush writes
only the rows since the last flush.

So that a long search stays a few files (reading 10,000 trials must take about a second, not one
open per flush), the sink merges its parts like a binary counter: part names carry the writer's id
and the range of flush numbers they hold (``part-<writer>-<first>-<last>.parquet``), and when two
parts of the same size class meet, one merged part replaces them. Each row is rewritten at most
log2(flushes) times, and parts stop growing at ``MAX_PART_ROWS``. A reader that lists both a merged
part and a part it replaces keeps only the merged one (``live_parts``); a part merged away between
listing and reading is a ``FileNotFoundError`` that ``analysis.load_results`` retries.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from ray.tune import Callback

from tune_tl.errors import TuneTLError
from tune_tl.params import PARAMS, TrialConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
_META = {b"tune_tl.schema_version": SCHEMA_VERSION.encode()}
_ARROW_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string()}

EPOCH_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("epoch", pa.int32()),
        ("train_loss", pa.float64()),
        ("val_loss", pa.float64()),
        ("val_acc", pa.float64()),
        ("lr", pa.float64()),
        ("epoch_seconds", pa.float64()),
        ("trainable_params", pa.int64()),
        ("diverged", pa.bool_()),
        ("time", pa.timestamp("ms", tz="UTC")),
    ],
    metadata=_META,
)

TRIAL_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("status", pa.string()),  # completed | pruned | diverged | error
        ("best_val_acc", pa.float64()),
        ("last_val_acc", pa.float64()),
        ("best_epoch", pa.int32()),
        ("epochs_run", pa.int32()),
        ("wall_seconds", pa.float64()),
        ("error", pa.string()),
    ]
    + [(name, _ARROW_TYPES[p.type]) for name, p in PARAMS.items()],
    metadata=_META,
)

STATUSES = ("completed", "pruned", "diverged", "error")


MAX_PART_ROWS = 200_000  # merged parts stop growing here
_PART_NAME = re.compile(r"part-(?P<writer>[0-9a-f]+)-(?P<first>\d+)-(?P<last>\d+)\.parquet")


def write_table_atomic(rows: list[dict[str, Any]] | pa.Table, schema: pa.Schema, directory: Path, name: str | None = None) -> Path:
    """Write ``rows`` as one new Parquet part in ``directory`` (temp name, then rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    name = name or f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
    tmp = directory / f".{name}.tmp"  # leading dot: readers skip it
    pq.write_table(table, tmp)
    os.replace(tmp, directory / name)
    return directory / name


def live_parts(paths: list[Path]) -> list[Path]:
    """Drop parts whose flush range lies inside another part of the same writer (already merged)."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for path in paths:
        m = _PART_NAME.fullmatch(path.name)
        if m:
            ranges.setdefault(m["writer"], []).append((int(m["first"]), int(m["last"])))
    live = []
    for path in paths:
        m = _PART_NAME.fullmatch(path.name)
        if m:
            first, last = int(m["first"]), int(m["last"])
            if any(a <= first and last <= b and (a, b) != (first, last) for a, b in ranges[m["writer"]]):
                continue
        live.append(path)
    return live


class _PartWriter:
    """One table's parts from one writer: a new part per flush, merged pairwise like a binary counter."""

    def __init__(self, directory: Path, schema: pa.Schema):
        self.directory = directory
        self.schema = schema
        self.writer = f"{time.time_ns():x}{uuid.uuid4().hex[:8]}"
        self.flushes = 0
        self.runs: list[tuple[int, int, int, Path]] = []  # (first, last, rows, path), oldest first

    def write(self, rows: list[dict[str, Any]]) -> None:
        n = self.flushes
        self.flushes += 1
        path = write_table_atomic(rows, self.schema, self.directory, self._name(n, n))
        self.runs.append((n, n, len(rows), path))
        while len(self.runs) >= 2:
            (a, _, rows_a, path_a), (_, b, rows_b, path_b) = self.runs[-2], self.runs[-1]
            if self.runs[-2][1] - a != b - self.runs[-1][0] or rows_a + rows_b > MAX_PART_ROWS:
                break  # different size classes (or big enough): keep both
            table = pa.concat_tables([pq.read_table(path_a, schema=self.schema), pq.read_table(path_b, schema=self.schema)])
            merged = write_table_atomic(table, self.schema, self.directory, self._name(a, b))
            for old in (path_a, path_b):  # after the merged part is in place: readers prefer it anyway
                old.unlink(missing_ok=True)
            self.runs[-2:] = [(a, b, rows_a + rows_b, merged)]

    def _name(self, first: int, last: int) -> str:
        return f"part-{self.writer}-{first:09d}-{last:09d}.parquet"


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


class ParquetSink(Callback):
    """Driver-side callback: buffers epoch rows, writes trial rows when trials end.

    A trial's status is ``completed`` if it ran ``max_epochs``, ``diverged`` if its loss went
    non-finite, ``error`` if it raised, and ``pruned`` if it stopped earlier otherwise (ASHA).
    """

    def __init__(self, root: str | Path, max_epochs: int, flush_rows: int = 256, flush_seconds: float = 10.0):
        self.root = Path(root)
        self.max_epochs = max_epochs
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._epochs: list[dict] = []
        self._trials: list[dict] = []
        self._stats: dict[str, dict] = {}
        self._last_flush = time.monotonic()
        self._writers = {"epochs": _PartWriter(self.root / "epochs", EPOCH_SCHEMA),
                         "trials": _PartWriter(self.root / "trials", TRIAL_SCHEMA)}

    # -- Ray Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self._stats.setdefault(trial.trial_id, {"start": time.time(), "history": []})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        stats = self._stats.setdefault(trial.trial_id, {"start": time.time(), "history": []})
        row = {name: result.get(name) for name in EPOCH_SCHEMA.names}
        row["trial_id"] = trial.trial_id
        row["time"] = int(time.time() * 1000)
        stats["history"].append((row["epoch"], row["val_acc"], bool(row["diverged"])))
        self._epochs.append(row)
        if len(self._epochs) >= self.flush_rows or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, error=_error_text(trial))

    def on_experiment_end(self, trials, **info):
        self.flush()

    # -- internals
    def _finish(self, trial, error: str | None) -> None:
        stats = self._stats.pop(trial.trial_id, {"start": time.time(), "history": []})
        history = stats["history"]
        accs = [(acc if acc is not None and math.isfinite(acc) else -1.0, epoch) for epoch, acc, _ in history]
        best_acc, best_epoch = max(accs) if accs else (None, None)
        epochs_run = max((e for e, _, _ in history), default=0)
        if error is not None:
            status = "error"
        elif history and history[-1][2]:
            status = "diverged"
        elif epochs_run >= self.max_epochs:
            status = "completed"
        else:
            status = "pruned"
        row = _effective_config(trial.config)
        row.update(
            trial_id=trial.trial_id,
            status=status,
            best_val_acc=best_acc,
            last_val_acc=history[-1][1] if history else None,
            best_epoch=best_epoch,
            epochs_run=epochs_run,
            wall_seconds=time.time() - stats["start"],
            error=error,
        )
        self._trials.append(row)
        acc = f"{best_acc:.4f}" if best_acc is not None else "n/a"
        log.info("trial %s %s after %d epoch(s), best val_acc %s", trial.trial_id, status, epochs_run, acc)
        self.flush()

    def flush(self) -> None:
        """Write buffered rows now (also called on every trial end and at the experiment's end)."""
        if self._epochs:
            self._writers["epochs"].write(self._epochs)
            self._epochs = []
        if self._trials:
            self._writers["trials"].write(self._trials)
            self._trials = []
        self._last_flush = time.monotonic()


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
