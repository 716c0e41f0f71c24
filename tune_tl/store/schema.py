"""The Arrow schemas of a search's Parquet tables, and reading them back.

``epochs/`` has one row per trial and epoch, ``trials/`` one row per finished trial (framework
columns first, then one column per parameter). The writer is ``tune_tl.store.results``; the one
reader is ``read_table`` (called by ``SearchRun.trials()`` / ``epochs()``).
"""

from __future__ import annotations

import logging
import time

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tune_tl.config.params import PARAMS
from tune_tl.store.storage import Location

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
        ("scheduled_lr", pa.float64()),  # the epoch's scheduled LR; the trials table's ``lr`` is the peak
        ("epoch_seconds", pa.float64()),
        ("trainable_params", pa.int64()),
        ("diverged", pa.bool_()),
        ("phase", pa.string()),  # probe | finetune
        ("cached_features", pa.bool_()),
        ("cached_blocks", pa.int32()),  # leading backbone blocks served from a cache: 0, a frozen prefix, or all (pooled)
        ("time", pa.timestamp("ms", tz="UTC")),
        ("node_id", pa.string()),
        ("workers", pa.int32()),  # data-parallel workers that trained the epoch (--workers-per-trial)
        ("probe", pa.bool_()),  # a stage-0 linear probe (a convex head on frozen features), not a Ray Tune trial
    ],
    metadata=_META,
)

TRIAL_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("status", pa.string()),  # completed | pruned | diverged | oom | error | not_started
        ("best_val_acc", pa.float64()),
        ("last_val_acc", pa.float64()),
        ("best_epoch", pa.int32()),
        ("epochs_run", pa.int32()),
        ("wall_seconds", pa.float64()),
        ("error", pa.string()),
        ("node_id", pa.string()),
        ("node_ip", pa.string()),
        ("workers", pa.int32()),  # data-parallel workers per trial (--workers-per-trial)
        ("probe", pa.bool_()),  # a stage-0 linear probe (tune_tl.search.probes), not a Ray Tune trial
    ]
    + [(name, _ARROW_TYPES[p.type]) for name, p in PARAMS.items()],
    metadata=_META,
)

#: ``<search>/recheck``: the top configs re-run with more seeds (``tune-tl search --recheck K``).
RECHECK_SCHEMA = pa.schema(
    [("trial_id", pa.string()), ("seed", pa.int64()), ("best_val_acc", pa.float64()), ("best_epoch", pa.int32())],
    metadata=_META,
)

#: The one status vocabulary: trials table, summaries, reports and the study's user attributes.
STATUSES = ("completed", "pruned", "diverged", "oom", "error")
#: The status of a ``trials`` row for a config the searcher proposed and did not start (``search.admission``: its
#: first epoch could not finish in the time left); ``error`` says why. Not among
#: :data:`STATUSES`, the statuses of trials that ran: such a row is never a Ray trial.
NOT_STARTED = "not_started"


#: ``<search>/quarantine/<table>/``: Parquet parts that could not be read, set aside (never deleted) so they block nothing.
QUARANTINE_DIR = "quarantine"


def read_table(directory: Location, schema: pa.Schema, key: list[str], attempts: int = 8) -> pd.DataFrame:
    """All parts in ``directory`` as one frame (empty with ``schema``'s columns if there are none).

    Safe while a search writes: parts appear whole, and a part compacted away between listing and
    reading makes this list the folder again (waiting longer each time: about 2.5 s in all at most, for a
    busy machine). A compaction's hidden ``_pending-`` part is read too: between deleting its sources and
    being renamed into place it holds their only copy. Rows seen twice during a compaction are kept once.
    A part that is not readable Parquet (truncated by a full disk, damaged by a copy) is named in one
    warning line and moved into ``<search>/quarantine/<table>/`` (:func:`readable_parts`); the rest is read.
    """
    if not directory.is_dir():
        return schema.empty_table().to_pandas()
    for attempt in range(attempts):
        try:
            frame = _read([p.path for p in directory.files(suffix=".parquet")], directory, schema)
            break
        except pa.ArrowInvalid:  # a corrupt part (a subclass of ValueError, not OSError), or a race with a compaction
            if attempt < attempts - 1:
                time.sleep(0.02 * 2**attempt)
                continue
            parts = readable_parts(directory, schema)
            frame = _read([p.path for p in parts], directory, schema) if parts else schema.empty_table().to_pandas()
        except OSError:  # FileNotFoundError: compacted away by the running search since we listed
            if attempt == attempts - 1:
                raise
            time.sleep(0.02 * 2**attempt)  # a compaction deletes its sources one by one: wait longer each time
    return frame.drop_duplicates(key, keep="last", ignore_index=True)


def _read(source, directory: Location, schema: pa.Schema) -> pd.DataFrame:
    # An explicit schema lets parts written by older versions (fewer columns) read as nulls.
    return ds.dataset(source, schema=schema, format="parquet", filesystem=directory.fs).to_table().to_pandas()


def readable_parts(directory: Location, schema: pa.Schema) -> list[Location]:
    """The Parquet parts of ``directory`` that read whole; each one that does not is moved aside into
    ``<search>/quarantine/<table>/`` and named in a warning (left in place, and still named, where the folder is
    read-only): one damaged part must not block ``report``, ``export`` or ``resume``."""
    good = []
    for part in directory.files(suffix=".parquet"):
        if part.name.startswith("."):  # temporary files: not parts (yet); a pending compaction is whole
            continue
        try:
            pq.read_table(part.path, schema=schema, filesystem=part.fs)
        except FileNotFoundError:  # compacted away since the listing: not damaged
            continue
        except (pa.ArrowInvalid, OSError) as exc:
            _quarantine(directory, part, exc)
            continue
        good.append(part)
    return good


def _quarantine(directory: Location, part: Location, exc: Exception) -> None:
    target = directory.parent / QUARANTINE_DIR / directory.name / part.name
    reason = " ".join(str(exc).split())[:160]
    try:
        target.parent.mkdir()
        part.move_to(target)
    except OSError as move_error:
        log.warning("unreadable Parquet part %s left out (%s); could not move it aside (%s)", part, reason, move_error)
        return
    log.warning("unreadable Parquet part %s left out and moved to %s (%s)", part, target, reason)
