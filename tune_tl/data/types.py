"""Plain containers for image data on its way from a source to the trials."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelledImages:
    """Decoded images of one size: uint8 ``(N, 3, H, W)``, int64 labels, class names by label.

    ``test_images``/``test_labels`` hold a source's own held-out test set (CIFAR-10's test batch),
    kept apart from the train/val split.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None


@dataclass(frozen=True)
class Split:
    """Train/val (and optional test) arrays at one resolution, uint8 ``(N, 3, R, R)``.

    Plain numpy so Ray's object store hands them to every trial zero-copy (read-only).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray | None = None
    test_y: np.ndarray | None = None

    @property
    def resolution(self) -> int:
        return int(self.train_x.shape[-1])


@dataclass(frozen=True)
class FileSplit:
    """Train/val (and optional test) *file lists* at one resolution: the streaming fallback.

    Used only when the decoded images would not fit the memory budget; trials then decode the
    files every epoch (``tune_tl.data.streaming``), so the paths must be readable where trials run.
    """

    train_files: tuple[str, ...]
    train_y: np.ndarray
    val_files: tuple[str, ...]
    val_y: np.ndarray
    resolution: int
    test_files: tuple[str, ...] | None = None
    test_y: np.ndarray | None = None


@dataclass(frozen=True)
class PreparedData:
    """Everything trials need from the data: one split per resolution and the class names."""

    classes: list[str]
    splits: dict[int, Split | FileSplit]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def streaming(self) -> bool:
        """Whether trials decode files per epoch (the data did not fit the memory budget)."""
        return any(isinstance(s, FileSplit) for s in self.splits.values())


@dataclass(frozen=True)
class BadImage:
    """A file that could not be used, and why (shown to the user, listed in skipped_images.txt)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Duplicate:
    """A file byte-identical to one seen earlier (``tune_tl.data.duplicates``; a row of duplicates.csv).

    Paths are relative to the data folder; ``kind`` is ``across splits`` (possibly with ``, conflicting labels``),
    ``same class`` or ``conflicting labels``; ``dropped`` says whether it was left out of its split.
    """

    path: str
    duplicate_of: str
    split: str
    kind: str
    dropped: bool


@dataclass(frozen=True)
class LoadedData:
    """What the driver's data step produced: the prepared data plus what a person should know.

    ``manifest`` maps each data file (relative path) to its SHA-256, for sources read from files
    (``tune_tl.data.manifest``); ``None`` for bundled data (digits).
    """

    data: PreparedData
    skipped: tuple[BadImage, ...] = ()
    description: str = ""
    duplicates: tuple[Duplicate, ...] = ()
    manifest: Mapping[str, str] | None = None
