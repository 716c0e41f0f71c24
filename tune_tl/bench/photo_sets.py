"""The photos benchmark's datasets: image folders, each with its own ``train/`` and ``val/`` split.

Every row of the benchmark (probe, fine-tune, hand-written script, ``tune-tl search --data``) reads
the same folder, so all of them see the same split. Real folders are used as they are; the two
synthetic tasks the other benchmarks use are written out as such folders once, with the split those
benchmarks use: digits at 64 px (the headline's split, seed 0) and the generated textures (the images
and split of the recorded ``textures96`` curves: 6 classes × 40 images, seed 0).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tune_tl.bench.curves import make_textures
from tune_tl.config import DataSpec
from tune_tl.data import load_data
from tune_tl.data.types import PreparedData
from tune_tl.errors import TuneTLError

#: Digits are upsampled from 8×8 to this side once, as the headline benchmark uses them.
DIGITS_SIZE = 64
TEXTURE_SIZE = 128


@dataclass(frozen=True)
class PhotoSet:
    """A dataset of the benchmark: its name, its folder, and whether it is a real photo set (the targets count those)."""

    name: str
    path: Path
    real: bool = True


def given_folder(path: str) -> PhotoSet:
    """A ``--data`` folder, checked for the ``train/`` + ``val/`` layout every row relies on."""
    folder = Path(path)
    missing = [part for part in ("train", "val") if not (folder / part).is_dir()]
    if missing:
        raise TuneTLError(f"--data {path}: no {' or '.join(f'{m}/' for m in missing)} folder; the benchmark compares every row "
                          "on the folder's own split: give a folder with train/<class>/* and val/<class>/*")
    return PhotoSet(folder.resolve().name, folder.resolve())


def write_split(data: PreparedData, root: Path) -> Path:
    """Write ``data``'s one split as ``root/train|val/<class>/<i>.png``."""
    (split,) = data.splits.values()
    for part, images, labels in (("train", split.train_x, split.train_y), ("val", split.val_x, split.val_y)):
        for i, (image, label) in enumerate(zip(images, labels, strict=False)):
            folder = root / part / data.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0), "RGB").save(folder / f"{i:05d}.png")
    return root


def digits_folder(work: Path) -> PhotoSet:
    """scikit-learn's digits at 64 px with the headline's split (1,437 train / 360 val)."""
    data = load_data(DataSpec(), [DIGITS_SIZE], seed=0).data
    return PhotoSet(f"digits{DIGITS_SIZE}", write_split(data, work / f"digits{DIGITS_SIZE}"), real=False)


def textures_folder(work: Path, per_class: int = 40, size: int = TEXTURE_SIZE) -> PhotoSet:
    """The generated textures (``curves.make_textures``), split as a search with seed 0 splits them."""
    pool = make_textures(work / "textures-pool", per_class=per_class, size=size)
    data = load_data(DataSpec(source="imagefolder", path=str(pool)), [size], seed=0).data
    shutil.rmtree(pool)
    return PhotoSet("textures", write_split(data, work / "textures"), real=False)
