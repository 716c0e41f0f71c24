"""Split once and resize once per resolution, in the driver, so trials only index arrays."""

from __future__ import annotations

import logging

import numpy as np

from tune_tl.data.preprocess import square_arrays
from tune_tl.data.types import LabelledImages, PreparedData, Split
from tune_tl.errors import TuneTLError

log = logging.getLogger(__name__)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified train/val indices: every trial validates on the same images."""
    # Imported here: every trial worker imports this module (through training.context) and never splits; importing
    # scikit-learn costs each of them about 1.3 s of its start (the driver imports it for the probes anyway).
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    try:
        train_idx, val_idx = train_test_split(idx, test_size=val_fraction, stratify=labels, random_state=seed)
    except ValueError as exc:  # too few images per class for a stratified split
        raise TuneTLError(f"data.val_fraction: cannot split {len(labels)} images stratified by class: {exc}") from None
    return np.sort(train_idx), np.sort(val_idx)


def prepare(data: LabelledImages, resolutions: list[int], val_fraction: float, seed: int) -> PreparedData:
    """Split ``data`` (seeded, stratified) and resize it to every resolution the space allows."""
    train_idx, val_idx = stratified_split(data.labels, val_fraction, seed)
    splits = {}
    for r in sorted(set(resolutions)):
        resized = square_arrays(data.images, r)
        test_x = None if data.test_images is None else square_arrays(data.test_images, r)
        splits[r] = Split(resized[train_idx], data.labels[train_idx], resized[val_idx], data.labels[val_idx], test_x, data.test_labels)
        log.info("prepared %d train / %d val images at %d px", len(train_idx), len(val_idx), r)
    return PreparedData(list(data.classes), splits)
