"""Plain containers for image data on its way from a source to the trials."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelledImages:
    """Decoded images of one size: uint8 ``(N, 3, H, W)``, int64 labels, class names by label."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]


@dataclass(frozen=True)
class Split:
    """Train/val arrays at one resolution, uint8 ``(N, 3, R, R)``.

    Plain numpy so Ray's object store hands them to every trial zero-copy (read-only).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray

    @property
    def resolution(self) -> int:
        return int(self.train_x.shape[-1])


@dataclass(frozen=True)
class PreparedData:
    """Everything trials need from the data: one ``Split`` per resolution and the class names."""

    classes: list[str]
    splits: dict[int, Split]

    @property
    def num_classes(self) -> int:
        return len(self.classes)
