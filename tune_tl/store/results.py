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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.tune import Callback

from tune_tl.config.params import PARAMS, TrialConfig
from tune_tl.errors import TuneTLError
from tune_tl.store.schema import EPOCH_SCHEMA, SCHEMA_VERSION, STATUSES, TRIAL_SCHEMA, readable_parts  # noqa: F401  (public names)
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location
from tune_tl.store.trial_record import TrialRecord, is_epoch_result, raised_error

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


def compact(directory: Location | str | Path, schema: pa.Schema, only_small: bool, drop: frozenset[str] = frozenset()) -> None:
    """Merge part files into one, so a long search reads as a few files, not thousands; ``drop``: leave out
    every row of these trial ids (a resumed search's discarded trials, ``tune_tl.search.reconcile``).

    Idempotent and crash-safe: the merged part is written under a hidden name (``_pending-…``, which
    ``pd.read_parquet`` skips) that records its sources; then the sources are deleted and the part is
    renamed into place. A kill at any point leaves no row visible twice, and ``finish_pending`` (run
    first by every compaction and when a search starts or resumes) completes a compaction that was cut
    short. Rows doubled by older versions are dropped on the way (one per trial, or per trial and epoch).
    """
    directory = Location.parse(directory)
    finish_pending(directory)
    parts = [p for p in directory.files("part-", ".parquet") if not (only_small and p.name.startswith("part-c"))]
    if len(parts) < (1 if drop else 2):
        return
    try:
        tables = [pq.read_table(p.path, schema=schema, filesystem=p.fs) for p in parts]
    except pa.ArrowInvalid:  # a damaged part: set aside (named in a warning), merge the rest
        readable = {p.name for p in readable_parts(directory, schema)}
        parts = [p for p in parts if p.name in readable]
        tables = [pq.read_table(p.path, schema=schema, filesystem=p.fs) for p in parts]
        if not parts:
            return
    table = _unique_rows(pa.concat_tables(tables))
    if drop:
        table = table.filter(pc.invert(pc.is_in(table["trial_id"], value_set=pa.array(sorted(drop), pa.string()))))
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
    pending.move_to(directory / pending.name[len(PENDING_PREFIX):])


def _unique_rows(table: pa.Table) -> pa.Table:
    """The first row of each trial (``trials``) or of each trial and epoch (``epochs``)."""
    keys = [c for c in ("trial_id", "epoch") if c in table.column_names]
    seen, keep = set(), []
    for i, key in enumerate(zip(*(table.column(c).to_pylist() for c in keys), strict=True)):
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

    A trial's ``status`` is :meth:`TrialRecord.verdict`'s, the rule the progress view and the Optuna
    study share.

    Idempotent per ``(trial_id, epoch)`` and per finished trial: at ``setup`` (a new or a resumed
    run) it reads what is already on disk, and a result or ending it has already written is not
    written again. Ray calls ``get_state`` whenever it snapshots the experiment; the sink flushes
    there, so every result behind a trial checkpoint in that snapshot is on disk before the snapshot
    is, and a driver crash loses only results that the resumed trials produce again.
    """

    def __init__(self, root: SearchRun | Location | str | Path, max_epochs: int, flush_rows: int = 50_000, flush_seconds: float = math.inf,
                 compact_every: int = 128):
        self.root = root.root if isinstance(root, SearchRun) else Location.parse(root)
        self.max_epochs = max_epochs
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._epochs: list[dict] = []
        self._trials: list[dict] = []
        self._open: dict[str, _OpenTrial] = {}
        self._last_flush = time.monotonic()
        self.compact_every = compact_every
        self._parts_since_compact = 0
        self._finished: set[str] = set()

    @property
    def open_trials(self) -> set[str]:
        """Trials that started and have not ended (what a time budget must close)."""
        return set(self._open)

    # -- Ray Tune hooks
    def setup(self, **info):
        """Rebuild what is already written (a resumed search): histories of unfinished trials, ended trials."""
        self._open, self._finished = {}, set()
        if not self.root.is_dir():
            return
        run = SearchRun(self.root)
        for folder in (run.epochs_dir, run.trials_dir):
            finish_pending(folder)  # a compaction the last driver's death cut short
        self._finished = set(run.trials()["trial_id"])
        for trial_id, rows in run.epochs().sort_values(["trial_id", "epoch"]).groupby("trial_id"):
            if trial_id in self._finished:
                continue
            trial = self._open.setdefault(trial_id, _OpenTrial(rows["time"].min().timestamp() - float(rows["epoch_seconds"].iloc[0])))
            for r in rows.itertuples():
                trial.record.add_epoch(int(r.epoch), r.val_acc, bool(r.diverged))

    def get_state(self):
        self.flush()
        return None  # the state lives in the Parquet files, rebuilt by ``setup``

    def on_trial_start(self, iteration, trials, trial, **info):
        self._open.setdefault(trial.trial_id, _OpenTrial(time.time()))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.trial_id in self._finished:
            return
        open_trial = self._open.setdefault(trial.trial_id, _OpenTrial(time.time()))
        is_epoch = is_epoch_result(result)
        if not open_trial.record.add_result(result) or not is_epoch:
            return  # an epoch heard before (a retry from an older checkpoint), or the trainable's verdict
        open_trial.node = (result.get("node_id"), result.get("node_ip"))
        open_trial.workers = result.get("workers")
        self._epochs.append(epoch_row(trial.trial_id, result, time.time()))
        self._maybe_flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, raised=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, raised=raised_error(trial))

    def on_experiment_end(self, trials, **info):
        self.flush()
        for folder, schema in self._tables():
            if folder.is_dir():
                compact(folder, schema, only_small=False)

    # -- internals
    def _tables(self):
        run = SearchRun(self.root)
        return ((run.epochs_dir, EPOCH_SCHEMA), (run.trials_dir, TRIAL_SCHEMA))

    def _finish(self, trial, raised: str | None) -> None:
        open_trial = self._open.pop(trial.trial_id, None) or _OpenTrial(time.time())
        if trial.trial_id in self._finished:
            return
        self._finished.add(trial.trial_id)
        status, error = open_trial.record.verdict(self.max_epochs, raised)
        self._trials.append(trial_row(trial.trial_id, trial.config, open_trial.record, status, error,
                                      wall_seconds=time.time() - open_trial.start, node=open_trial.node, workers=open_trial.workers))
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        """Flush by size (or age, if ``flush_seconds`` is finite): a result costs an append."""
        rows = len(self._epochs) + len(self._trials)
        if rows >= self.flush_rows or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows now (also called at every Ray snapshot and at the experiment's end)."""
        run = SearchRun(self.root)
        if self._epochs:
            write_table_atomic(self._epochs, EPOCH_SCHEMA, run.epochs_dir)
            self._epochs = []
        if self._trials:
            write_table_atomic(self._trials, TRIAL_SCHEMA, run.trials_dir)
            self._trials = []
            self._parts_since_compact += 1
        self._last_flush = time.monotonic()
        if self._parts_since_compact >= self.compact_every:
            for folder, schema in self._tables():
                if folder.is_dir():
                    compact(folder, schema, only_small=True)
            self._parts_since_compact = 0


@dataclass
class _OpenTrial:
    """A trial between its start and its end, as the sink follows it."""

    start: float
    record: TrialRecord = field(default_factory=TrialRecord)
    node: tuple[str | None, str | None] = (None, None)
    workers: int | None = None


def epoch_row(trial_id: str, result: dict, when: float, probe: bool = False) -> dict:
    """The ``epochs`` row of one reported epoch (``result``: the trainable's metrics), heard at ``when`` (epoch seconds);
    ``probe``: a stage-0 probe's (``search.probes``)."""
    row = {name: result.get(name) for name in EPOCH_SCHEMA.names}
    row.update(trial_id=trial_id, time=int(when * 1000), probe=probe)
    return row


def trial_row(trial_id: str, config: dict, record: TrialRecord, status: str, error: str | None, wall_seconds: float | None,
              node: tuple[str | None, str | None] = (None, None), workers: int | None = None, probe: bool = False) -> dict:
    """The ``trials`` row of a finished trial: its effective config, its ``status`` and what ``record`` heard."""
    best_acc, best_epoch = record.best or (None, None)
    row = _effective_config(config)
    row.update(trial_id=trial_id, status=status, best_val_acc=best_acc, last_val_acc=record.last_acc, best_epoch=best_epoch,
               epochs_run=record.epochs_run, wall_seconds=wall_seconds, error=error, node_id=node[0], node_ip=node[1],
               workers=workers, probe=probe)
    return row


def _effective_config(config: dict) -> dict:
    """The parameters the trial actually trained with: defaults filled in, inactive ones null."""
    try:
        return TrialConfig.from_dict(config).to_dict()
    except TuneTLError:  # a bad config errors in the trial; record what was asked for
        return {name: config.get(name) for name in PARAMS}
