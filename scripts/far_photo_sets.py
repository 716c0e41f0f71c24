"""Build the photo benchmark's real sets (issue 30) from public repositories, each with train/, val/ and test/.

Not committed data: the images come from repositories ``fetch`` brings (``git archive HEAD <folder>`` of each),
sampled with a fixed seed, so another run of this script on the same repositories writes the same folders.

    python scripts/far_photo_sets.py --xray RAW/train --blood RAW/PBC_dataset_normal_DIB --dtd RAW/images \
        --scenes ../shared/datasets/intel_scenes --out /work/data

- ``chest_xray_pneumonia``: github:lecuong1502/BTL_Machine_Learning ``train/`` (Kermany et al., CC BY 4.0), 2 classes
  in the source's proportion, 1,600 / 400 / 400, split by patient (no patient in two splits), resized to 224 x 224.
- ``pbc_blood_cells``: github:AuralinACC/Blood-Cell-Classification ``PBC_dataset_normal_DIB`` (Acevedo et al. 2020,
  CC BY 4.0), 8 classes, 1,600 / 400 / 400 stratified, as they are (360 x 363).
- ``dtd10_t``: github:pan8915/DeepTexture ``images/`` (the first ten DTD classes, Cimpoi et al. 2014), all 1,200 images,
  80 / 20 / 20 per class, shorter side 256.
- ``intel_scenes_t``: ``../shared/datasets/intel_scenes``'s train as it is, its val halved into val and test per class.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
from collections import defaultdict
from pathlib import Path

from PIL import Image

SEED = 0
EXTS = {".jpg", ".jpeg", ".png"}


def images(folder: Path) -> dict[str, list[Path]]:
    """``{class: sorted image files}`` of a ``<class>/<file>`` folder."""
    return {c.name: sorted(f for f in c.iterdir() if f.suffix.lower() in EXTS) for c in sorted(folder.iterdir()) if c.is_dir()}


def patient(path: Path) -> str:
    """The patient an X-ray file belongs to: ``person123_...`` or ``IM-0115-0001`` / ``NORMAL2-IM-1427-0001``."""
    m = re.match(r"(person\d+)_", path.name) or re.match(r"(.*IM-\d+)-", path.name)
    return m.group(1) if m else path.stem


def grouped_split(files: list[Path], counts: tuple[int, int, int], group=lambda p: p.name) -> list[list[Path]]:
    """``files`` sampled into three parts of ``counts`` images, whole groups at a time (seeded)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        groups[group(f)].append(f)
    order = sorted(groups)
    random.Random(SEED).shuffle(order)
    parts: list[list[Path]] = [[], [], []]
    i = 0
    for key in order:
        while i < 3 and len(parts[i]) >= counts[i]:
            i += 1
        if i == 3:
            break
        parts[i] += groups[key]
    return parts


def write(parts: dict[str, dict[str, list[Path]]], out: Path, convert=None) -> None:
    if out.exists():
        shutil.rmtree(out)
    for part, classes in parts.items():
        for cls, files in classes.items():
            folder = out / part / cls
            folder.mkdir(parents=True)
            for f in files:
                if convert is None:
                    shutil.copyfile(f, folder / f.name)
                else:
                    convert(Image.open(f)).save(folder / (f.stem + ".jpg"), quality=95)
    counts = {part: sum(map(len, classes.values())) for part, classes in parts.items()}
    print(f"{out}: {counts}")


def proportional(files: dict[str, list[Path]], totals: tuple[int, int, int]) -> dict[str, tuple[int, int, int]]:
    """Per-class counts of each part, in the classes' proportion in ``files``."""
    n = sum(map(len, files.values()))
    return {c: tuple(round(t * len(fs) / n) for t in totals) for c, fs in files.items()}


def split_set(files: dict[str, list[Path]], totals: tuple[int, int, int], group=lambda p: p.name):
    parts: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}, "test": {}}
    for cls, counts in proportional(files, totals).items():
        for part, chosen in zip(parts, grouped_split(files[cls], counts, group), strict=True):
            parts[part][cls] = chosen  # a whole patient may take a part a few images over its count
    return parts


def shorter_side(side: int):
    def resize(img: Image.Image) -> Image.Image:
        img = img.convert("RGB")
        scale = side / min(img.size)
        return img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
    return resize


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--xray", type=Path)
    p.add_argument("--blood", type=Path)
    p.add_argument("--dtd", type=Path)
    p.add_argument("--scenes", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    if a.xray:
        write(split_set(images(a.xray), (1600, 400, 400), patient), a.out / "chest_xray_pneumonia",
              lambda img: img.convert("RGB").resize((224, 224), Image.BILINEAR))
    if a.blood:
        write(split_set(images(a.blood), (1600, 400, 400)), a.out / "pbc_blood_cells")
    if a.dtd:
        classes = images(a.dtd)
        write(split_set(classes, tuple(n * len(classes) for n in (80, 20, 20))), a.out / "dtd10_t", shorter_side(256))
    if a.scenes:
        val = images(a.scenes / "val")
        halves = {c: grouped_split(fs, (len(fs) // 2, len(fs) - len(fs) // 2, 0)) for c, fs in val.items()}
        parts = {"train": images(a.scenes / "train"), "val": {c: h[0] for c, h in halves.items()},
                 "test": {c: h[1] for c, h in halves.items()}}
        write(parts, a.out / "intel_scenes_t")


if __name__ == "__main__":
    main()
