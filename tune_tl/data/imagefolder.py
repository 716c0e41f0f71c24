"""A folder of labelled images: ``<root>/train/<class>/*`` (+ ``val/``, optional ``test/``) or ``<root>/<class>/*``.

The driver decodes every file once, in parallel threads (Pillow releases the GIL while decoding
and resizing), converts it to RGB and resizes it to every resolution the space allows, with the
one rule of ``tune_tl.data.preprocess`` (shorter side, centre crop) that ``predict`` uses too.

When the decoded arrays would exceed ``data.memory_budget_mb`` the files are still decoded once to
validate them, but trials get file lists instead and decode them per epoch (the streaming path).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tune_tl.data import cifar10, validate
from tune_tl.data.duplicates import drop_duplicates, summary
from tune_tl.data.manifest import manifest_of
from tune_tl.data.prepare import stratified_split
from tune_tl.data.preprocess import load_rgb, square_uint8
from tune_tl.data.types import BadImage, FileSplit, LoadedData, PreparedData, Split
from tune_tl.errors import TuneTLError

log = logging.getLogger(__name__)

FORMATS = "JPEG, PNG, BMP, WebP, GIF, TIFF"
CHUNK = 2048


@dataclass(frozen=True)
class FolderIndex:
    """The files of an image folder, by part (``train``/``val``/``test``, or ``pool`` to be split)."""

    root: Path
    layout: str
    classes: list[str]
    parts: dict[str, tuple[list[str], np.ndarray]]
    dirs: dict[str, Path]


# ---------------------------------------------------------------- decoding


def decode(path: str, resolutions: tuple[int, ...]) -> list[np.ndarray] | BadImage:
    """One file at every resolution, or the reason it cannot be used."""
    return hash_and_decode(path, resolutions)[1]


def hash_and_decode(path: str, resolutions: tuple[int, ...]) -> tuple[str | None, list[np.ndarray] | BadImage]:
    """One file's SHA-256 (``None`` if unreadable) and the file at every resolution, or the reason it cannot be used.

    The bytes are read once: hashed (duplicates, the data manifest) and decoded from memory.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, BadImage(path, f"cannot be read ({exc.strerror or exc})")
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return digest, BadImage(path, "is empty (0 bytes)")
    try:
        img = load_rgb(io.BytesIO(data))
    except UnidentifiedImageError:
        return digest, BadImage(path, f"is not an image file Pillow can read (supported: {FORMATS})")
    except Image.DecompressionBombError as exc:
        return digest, BadImage(path, f"is too large to decode safely ({exc})")
    except (OSError, SyntaxError, ValueError) as exc:
        return digest, BadImage(path, f"is corrupt or truncated ({exc})")
    return digest, [square_uint8(img, r) for r in resolutions]


@dataclass(frozen=True)
class Decoded:
    """What decoding a file list produced: arrays per resolution (empty unless kept), which files are usable,
    the bad ones, and every file's SHA-256 (``None`` where it could not be read)."""

    arrays: dict[int, np.ndarray]
    good: np.ndarray
    bad: list[BadImage]
    hashes: list[str | None]


def decode_all(files: list[str], resolutions: tuple[int, ...], keep: bool) -> Decoded:
    """Decode and hash ``files`` in parallel threads (Pillow and hashlib release the GIL)."""
    arrays = {r: np.empty((len(files), 3, r, r), dtype=np.uint8) for r in resolutions} if keep else {}
    good = np.zeros(len(files), dtype=bool)
    bad: list[BadImage] = []
    hashes: list[str | None] = [None] * len(files)
    sizes = resolutions if keep else (min(resolutions),)  # validation still decodes every file
    start = last_log = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for first in range(0, len(files), CHUNK):  # bounded number of pending results
            chunk = files[first : first + CHUNK]
            for i, (digest, out) in enumerate(pool.map(lambda f: hash_and_decode(f, sizes), chunk), start=first):
                hashes[i] = digest
                if isinstance(out, BadImage):
                    bad.append(out)
                    continue
                good[i] = True
                for r, img in zip(resolutions if keep else (), out, strict=False):
                    arrays[r][i] = img
            if time.perf_counter() - last_log > 10:
                last_log = time.perf_counter()
                log.info("decoding: %d / %d images", first + len(chunk), len(files))
    log.info("decoded %d images in %.1f s (%d bad)", len(files), time.perf_counter() - start, len(bad))
    return Decoded(arrays, good, bad, hashes)


# ---------------------------------------------------------------- layout


def scan(root: Path) -> FolderIndex:
    """Find the layout and every file; structural problems raise here."""
    validate.check_folder(root, "data.path")
    train_dir = root / "train"
    if not train_dir.is_dir():
        if (root / "val").is_dir():
            raise TuneTLError(f"{root} has a val/ folder but no train/ folder; add train/<class>/ images")
        classes, files = _class_tree(root)
        _refuse_cifar_batches(root, classes)
        validate.check_classes(root, classes, files)
        return FolderIndex(root, "class folders, split by data.val_fraction", classes, {"pool": _flatten(classes, files)}, {"pool": root})
    classes, files = _class_tree(train_dir)
    validate.check_classes(train_dir, classes, files)
    parts = {}
    for part in ("val", "test"):
        part_dir = root / part
        if part_dir.is_dir():
            part_classes, part_files = _class_tree(part_dir)
            validate.check_same_classes(train_dir, part_dir, classes, part_classes)
            validate.check_classes(part_dir, part_classes, part_files)
            parts[part] = _flatten(classes, part_files)
    if "val" in parts:
        parts = {"train": _flatten(classes, files), **parts}
        layout = "train/ and val/" + (" and test/" if "test" in parts else "")
    else:
        parts = {"pool": _flatten(classes, files), **parts}
        layout = "train/ split by data.val_fraction" + (", test/" if "test" in parts else "")
    dirs = {n: train_dir if n in ("train", "pool") else root / n for n in parts}
    return FolderIndex(root, layout, classes, parts, dirs)


def _refuse_cifar_batches(root: Path, classes: list[str]) -> None:
    """A folder of CIFAR batch files given as an image folder: say how to read it, never read it on a guess."""
    batches = cifar10.find_root(root)  # looks for the file names only; nothing is opened
    if len(classes) < 2 and batches is not None:
        raise TuneTLError(f"{root} holds CIFAR-10 batch files ({batches / cifar10.TRAIN_BATCHES[0]}, ...), not class folders of "
                          "images: --data alone means an image folder. To search CIFAR-10, use a space file with data.source: "
                          "cifar10 (and data.path); those files are pickles, so use only a copy you trust")


def _class_tree(folder: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Class names (sub-folders, sorted) and each one's files, recursively, hidden files left out."""
    classes = [e.name for e in validate.list_dir(folder, "folder") if e.is_dir()]
    return classes, {c: validate.files_under(folder / c) for c in classes}


def _flatten(classes: list[str], files: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    paths = [f for c in classes for f in files.get(c, [])]
    labels = np.array([i for i, c in enumerate(classes) for _ in files.get(c, [])], dtype=np.int64)
    return paths, labels


# ---------------------------------------------------------------- preparation


def load_imagefolder(root: str | Path, resolutions: list[int], val_fraction: float, seed: int,
                     memory_budget_mb: float, skip_bad_images: bool, *, keep_duplicates: bool = False) -> LoadedData:
    """Validate, decode once and split an image folder; stream instead if it exceeds the budget.

    Files are hashed as they are decoded: val/test copies of earlier files are dropped unless
    ``keep_duplicates`` (``tune_tl.data.duplicates``), and the hashes are the data's manifest.
    """
    index = scan(Path(root).expanduser().resolve())
    resolutions = tuple(sorted(set(resolutions)))
    names = list(index.parts)
    files = [f for n in names for f in index.parts[n][0]]
    need_mb = len(files) * 3 * sum(r * r for r in resolutions) / 2**20
    streaming = need_mb > memory_budget_mb
    decoded = decode_all(files, resolutions, keep=not streaming)
    arrays, good = decoded.arrays, decoded.good
    skipped = validate.raise_or_skip(decoded.bad, skip_bad_images)

    # Positions of each part's usable files within ``files``.
    positions, offset = {}, 0
    for n in names:
        count = len(index.parts[n][0])
        pos = np.arange(offset, offset + count)
        labels = index.parts[n][1]
        positions[n] = (pos[good[pos]], labels[good[pos]])
        left = {c: int((positions[n][1] == i).sum()) for i, c in enumerate(index.classes)}
        validate.check_left_after_skipping(left, index.dirs[n])
        offset += count
    if "pool" in positions:
        pos, labels = positions.pop("pool")
        tr, va = stratified_split(labels, val_fraction, seed)
        positions = {"train": (pos[tr], labels[tr]), "val": (pos[va], labels[va]), **positions}
    positions, duplicates = drop_duplicates(positions, decoded.hashes, files, index.classes, index.root, keep_duplicates)
    if (line := summary(duplicates)) is not None:
        log.warning("%s", line)

    splits = {}
    for r in resolutions:
        if streaming:
            pick = {n: (tuple(files[i] for i in p), y) for n, (p, y) in positions.items()}
            test = pick.get("test", (None, None))
            splits[r] = FileSplit(*pick["train"], *pick["val"], r, *test)
        else:
            pick = {n: (arrays[r][p], y) for n, (p, y) in positions.items()}
            splits[r] = Split(*pick["train"], *pick["val"], *pick.get("test", (None, None)))
    counts = ", ".join(f"{len(positions[n][0])} {n}" for n in positions)
    path = (f"streaming from files: decoded arrays would need {need_mb:.3g} MB > data.memory_budget_mb "
            f"{memory_budget_mb:g}; trials decode images every epoch") if streaming else (
            f"in memory: {need_mb:.1f} MB of uint8 arrays shared with every trial through Ray's object store")
    description = f"image folder {index.root} ({index.layout}): {len(index.classes)} classes, {counts} images; {path}"
    return LoadedData(PreparedData(list(index.classes), splits), skipped, description, duplicates,
                      manifest_of(index.root, files, decoded.hashes))
