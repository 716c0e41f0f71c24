"""Byte-identical files in an image folder: found by content hash before any trial, reported, and kept off val/test.

A validation (or test) image that is also a training image inflates the accuracy that picks the winner;
public datasets often ship such copies. Files are compared by the SHA-256 of their bytes, in the order
train, val, test (and within a split, the folder's order), so the first copy is the one kept:

- **across splits**: a val file identical to a training file, or a test file identical to a train or val
  file. Dropped from val/test unless ``data.keep_duplicates`` (``--keep-duplicates``). For a single
  folder that tune_tl splits itself, the same rule drops the val copies, so no file is on both sides.
- **same class**: two copies in one split and class: counted (the class weighs that image twice).
- **conflicting labels**: one file under two classes; reported, not resolved (which label is right is
  the user's call). Across splits it is dropped like any other copy.

Every copy is a row of ``duplicates.csv`` in the search folder (columns ``path, duplicate_of, split,
kind, dropped``; paths relative to the data folder).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np

from tune_tl.data.types import Duplicate
from tune_tl.errors import TuneTLError
from tune_tl.store.storage import Location

log = logging.getLogger(__name__)

#: The order in which a file's first copy is found: a later split's copy is the one dropped.
SPLIT_ORDER = ("train", "val", "test")
COLUMNS = ("path", "duplicate_of", "split", "kind", "dropped")
ACROSS, SAME_CLASS, CONFLICT = "across splits", "same class", "conflicting labels"

#: A split's usable files: positions into the folder's file list, and their labels.
Positions = dict[str, tuple[np.ndarray, np.ndarray]]


def drop_duplicates(positions: Positions, hashes: list[str | None], files: list[str], classes: list[str], root: Path,
                    keep: bool) -> tuple[Positions, tuple[Duplicate, ...]]:
    """``positions`` without the val/test copies of earlier files (unless ``keep``), and every copy found.

    Raises:
        TuneTLError: Dropping the copies leaves a class of val/test without an image.
    """
    first: dict[str, tuple[str, int, int]] = {}  # hash -> (split, label, position) of its first copy
    found: list[Duplicate] = []
    kept: Positions = {}
    for split in sorted(positions, key=SPLIT_ORDER.index):
        pos, labels = positions[split]
        keep_mask = np.ones(len(pos), dtype=bool)
        for j, (p, label) in enumerate(zip(pos.tolist(), labels.tolist(), strict=True)):
            digest = hashes[p]
            if digest is None:
                continue
            if digest not in first:
                first[digest] = (split, label, p)
                continue
            split0, label0, p0 = first[digest]
            across = split0 != split
            kind = ACROSS + (f", {CONFLICT}" if label != label0 else "") if across else (SAME_CLASS if label == label0 else CONFLICT)
            dropped = across and not keep
            keep_mask[j] = not dropped
            found.append(Duplicate(_rel(files[p], root), _rel(files[p0], root), split, kind, dropped))
        kept[split] = (pos[keep_mask], labels[keep_mask])
        if split != "train" and not keep_mask.all():
            _check_classes_left(kept[split][1], classes, root / split if (root / split).is_dir() else root, split)
    return {n: kept[n] for n in positions}, tuple(found)


def summary(duplicates: tuple[Duplicate, ...]) -> str | None:
    """One line for the log, or ``None`` when there are no copies."""
    if not duplicates:
        return None
    kinds = Counter(d.kind.split(",")[0] for d in duplicates)
    conflicts = sum(CONFLICT in d.kind for d in duplicates)
    dropped = sum(d.dropped for d in duplicates)
    parts = []
    if kinds[ACROSS]:
        fate = (f"dropped {dropped} from val/test (--keep-duplicates, or data.keep_duplicates: true, keeps them)" if dropped
                else "kept, as --keep-duplicates (data.keep_duplicates) asks; they inflate val/test accuracy")
        by_split = Counter(d.split for d in duplicates if d.kind.startswith(ACROSS))
        parts.append(f"{kinds[ACROSS]} val/test file(s) byte-identical to an earlier split's file "
                     f"({', '.join(f'{n} {s}' for s, n in sorted(by_split.items()))}): {fate}")
    if kinds[SAME_CLASS]:
        parts.append(f"{kinds[SAME_CLASS]} repeated within a class")
    if conflicts:
        parts.append(f"{conflicts} under two different classes (conflicting labels: fix them)")
    return "duplicates: " + "; ".join(parts)


def write_duplicates(duplicates: tuple[Duplicate, ...], path) -> None:
    """``duplicates`` as CSV (``COLUMNS``) at ``path`` (a local path or a ``Location``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows((d.path, d.duplicate_of, d.split, d.kind, str(d.dropped).lower()) for d in duplicates)
    Location.parse(path).write_text(buffer.getvalue())


def _check_classes_left(labels: np.ndarray, classes: list[str], where: Path, split: str) -> None:
    counts = np.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts, strict=False) if n == 0]
    if empty:
        raise TuneTLError(f"{where}: class {empty[0]!r} has no {split} image left once the copies of training images are "
                          "dropped (see the duplicates in the log); add distinct images, or pass --keep-duplicates "
                          "(data.keep_duplicates: true) to keep them")


def _rel(path: str, root: Path) -> str:
    return os.path.relpath(path, root)
