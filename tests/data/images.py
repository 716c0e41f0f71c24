"""Build tiny real image folders with Pillow for the data tests (no mocks, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 40)]


def image(label: int, size=(40, 30), seed: int = 0) -> Image.Image:
    """A class-coloured RGB image with a little noise, so classes are learnable and images differ."""
    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[label], dtype=np.int16)
    pixels = base + rng.integers(-20, 21, size=(size[1], size[0], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_class_tree(folder: Path, classes=("a", "b", "c"), per_class: int = 6, ext: str = "png", seed: int = 0) -> Path:
    """``folder/<class>/<i>.<ext>`` for each class."""
    for label, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image(label, seed=seed * 1000 + label * 100 + i).save(folder / name / f"{i}.{ext}")
    return folder


def write_split_folder(root: Path, classes=("a", "b", "c"), train: int = 6, val: int = 3, test: int = 0) -> Path:
    """The PyTorch-tutorial layout: ``root/train/<class>``, ``root/val/<class>`` (and ``root/test``)."""
    write_class_tree(root / "train", classes, train, seed=1)
    write_class_tree(root / "val", classes, val, seed=2)
    if test:
        write_class_tree(root / "test", classes, test, seed=3)
    return root
