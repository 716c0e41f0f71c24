"""The data a search ran on, file by file, so ``resume``, ``retrain`` and ``--recheck`` refuse other data by name.

At search start the driver records every data file's SHA-256 (relative path → hash) in the search folder
(``SearchRun.data_manifest_file``), beside the duplicates it found (``tune_tl.data.duplicates``). A command
that loads the search's data again compares the files now with that record before Ray starts, and refuses
with "N images added, M removed, K changed" rather than train and validate on a split that silently moved.
A search folder from before the manifest falls back to the prepared-data fingerprint in ``search.json``
(classes, split, pixels), which can say that the data differs but not which files.

    >>> record_data(run, loaded)                                      # the search, once   # doctest: +SKIP
    >>> check_unchanged(run, prepared.loaded, "tune-tl resume", fp)   # before Ray         # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tune_tl.data.duplicates import write_duplicates
from tune_tl.data.types import FileSplit, LoadedData, PreparedData
from tune_tl.errors import TuneTLError
from tune_tl.store.search_run import SearchRun

log = logging.getLogger(__name__)

FORMAT = 1
#: A file that could not be read at load time (it was reported as bad).
UNREADABLE = "unreadable"


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """Hash of the arrays' dtypes, shapes and contents, in order."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def data_fingerprint(data: PreparedData) -> dict[str, Any]:
    """What identifies the prepared data: classes, the split's labels, and the pixels per resolution."""
    first = next(iter(data.splits.values()))
    images = {}
    for resolution, split in sorted(data.splits.items()):
        if isinstance(split, FileSplit):  # streamed: the files stand for their pixels
            images[str(resolution)] = fingerprint_arrays(np.array(split.train_files), np.array(split.val_files))
        else:
            images[str(resolution)] = fingerprint_arrays(split.train_x, split.val_x)
    return {"classes": list(data.classes), "split": fingerprint_arrays(first.train_y, first.val_y), "images": images}


def manifest_of(root: Path, files: Iterable[str], hashes: Iterable[str | None]) -> dict[str, str]:
    """Relative path → SHA-256 for ``files`` under ``root`` (``UNREADABLE`` for a file that could not be read)."""
    return {os.path.relpath(f, root): h or UNREADABLE for f, h in zip(files, hashes, strict=True)}


def hash_files(root: Path, files: Iterable[Path]) -> dict[str, str]:
    """``manifest_of`` for files not read otherwise (CIFAR-10's batch files)."""
    files = list(files)
    return manifest_of(root, map(str, files), (_sha256(f) for f in files))


@dataclass(frozen=True)
class Changes:
    """How the data files now differ from the record."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self) -> str:
        """``3 images added, 1 removed, 2 changed (e.g. added train/cat/new.jpg)``."""
        counts = f"{len(self.added)} images added, {len(self.removed)} removed, {len(self.changed)} changed"
        example = next((f"{what} {names[0]}" for what, names in (("added", self.added), ("removed", self.removed),
                                                                    ("changed", self.changed)) if names), "")
        return f"{counts} (e.g. {example})"


def compare(recorded: Mapping[str, str], now: Mapping[str, str]) -> Changes:
    return Changes(tuple(sorted(set(now) - set(recorded))), tuple(sorted(set(recorded) - set(now))),
                   tuple(sorted(p for p in set(now) & set(recorded) if now[p] != recorded[p])))


def record_data(run: SearchRun, loaded: LoadedData) -> None:
    """Write what the search's data step found: the manifest, and the duplicates list when there are copies."""
    if loaded.manifest is not None:
        run.data_manifest_file.write_text(json.dumps({"format": FORMAT, "files": dict(loaded.manifest)}, indent=0, sort_keys=True))
    if loaded.duplicates:
        write_duplicates(loaded.duplicates, run.duplicates_file)
        log.info("duplicates listed in %s", run.duplicates_file)


def read_manifest(run: SearchRun) -> dict[str, str] | None:
    """The recorded manifest, or ``None`` for a search from before manifests (or of a source without files)."""
    file = run.data_manifest_file
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
        return {str(k): str(v) for k, v in record["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TuneTLError(f"{file} is not a readable data manifest ({exc}); the data cannot be checked against it") from None


def check_unchanged(run: SearchRun, loaded: LoadedData, command: str,
                    fingerprint: Callable[[], dict[str, Any]] | None = None) -> None:
    """Raise unless the data ``loaded`` now is the data the search in ``run`` recorded.

    Args:
        command: What is asking (``tune-tl resume``), for the message.
        fingerprint: The prepared data's fingerprint (``search.warm_start.data_fingerprint``), computed only for a
            search folder without a manifest.

    Raises:
        TuneTLError: Files were added, removed or changed (counted and one named), or, for an older search, the
            fingerprint differs.
    """
    where = run.data_path or "the data"
    advice = "restore the data as it was when the search started, or start a new search on the data as it is now"
    recorded = read_manifest(run)
    if recorded is not None and loaded.manifest is not None:
        changes = compare(recorded, loaded.manifest)
        if changes:
            raise TuneTLError(f"{command} {run.root}: the data in {where} changed since the search started: "
                              f"{changes.describe()}; {advice}")
        return
    theirs = run.data_fingerprint
    if not theirs or fingerprint is None:
        return  # nothing recorded to compare with (a search from before fingerprints)
    differs = _fingerprint_differs(fingerprint(), theirs)
    if differs:
        raise TuneTLError(f"{command} {run.root}: the data in {where} is not the data the search ran on ({differs} differ; "
                          f"this search predates per-file records, so the files cannot be named); {advice}")


def _fingerprint_differs(mine: dict[str, Any], theirs: dict[str, Any]) -> str | None:
    if theirs.get("classes") != mine["classes"]:
        return "its classes"
    if theirs.get("split") != mine["split"]:
        return "the images in its train/val split"
    common = set(theirs.get("images", {})) & set(mine["images"])
    if any(theirs["images"][r] != mine["images"][r] for r in common):
        return "its pixels"
    return None


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()
