"""CIFAR-10 from a local torchvision-format folder (``cifar-10-batches-py``); never downloaded.

The folder holds ``data_batch_1`` … ``data_batch_5``, ``test_batch`` and ``batches.meta``: Python
pickles of ``{"data": uint8 (N, 3072), "labels": [int]}``, as torchvision's ``CIFAR10`` reads them.
The five training batches are split into train/val by ``data.val_fraction``; ``test_batch`` is the
held-out test set. These files are pickles, so they are read by ``tune_tl.safe_pickle``, which loads
plain values and numpy arrays only and refuses any other global a crafted file names (a pickle can run
code while it loads). Only a space that says ``data.source: cifar10`` reads them: ``--data`` alone means
an image folder. Still, point tune_tl at a copy you trust.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tune_tl.data.types import LabelledImages
from tune_tl.errors import TuneTLError
from tune_tl.safe_pickle import CIFAR_GLOBALS, load_restricted

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
DEFAULT_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def find_root(path: str | Path | None) -> Path | None:
    """The ``cifar-10-batches-py`` folder at ``path`` or inside it, or ``None``."""
    base = Path(path if path is not None else "data").expanduser()
    for candidate in (base, base / FOLDER):
        if (candidate / TRAIN_BATCHES[0]).is_file():
            return candidate
    return None


def batch_files(path: str | Path | None) -> tuple[Path, list[Path]]:
    """The CIFAR-10 folder at ``path`` and the batch files in it (for the data manifest); none if there is no folder."""
    root = find_root(path)
    if root is None:
        return Path(path or "data"), []
    return root, [root / name for name in (*TRAIN_BATCHES, "test_batch", "batches.meta") if (root / name).is_file()]


def load_cifar10(path: str | Path | None) -> LabelledImages:
    """All training batches (to be split into train/val) and the test batch, as uint8 ``(N, 3, 32, 32)``."""
    root = find_root(path)
    if root is None:
        base = Path(path if path is not None else "data").expanduser().resolve()
        raise TuneTLError(
            f"data.source cifar10: no CIFAR-10 found; looked for {FOLDER}/{TRAIN_BATCHES[0]} in {base} and "
            f"{base / FOLDER}. tune_tl never downloads: fetch {URL}, extract it, and set data.path "
            f"(or --data) to the {FOLDER} folder"
        )
    missing = [name for name in TRAIN_BATCHES if not (root / name).exists()]
    if missing:
        raise TuneTLError(f"{root}: CIFAR-10 batch file(s) {missing} are missing; re-extract {URL}")
    train = [_read_batch(root / name) for name in TRAIN_BATCHES]
    images = np.concatenate([b[0] for b in train])
    labels = np.concatenate([b[1] for b in train])
    test_images = test_labels = None
    if (root / "test_batch").exists():
        test_images, test_labels = _read_batch(root / "test_batch")
    classes = DEFAULT_CLASSES
    if (root / "batches.meta").exists():
        meta = _unpickle(root / "batches.meta")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", DEFAULT_CLASSES)]
    if labels.max() >= len(classes):
        raise TuneTLError(f"{root}: labels go up to {labels.max()} but batches.meta names {len(classes)} classes")
    return LabelledImages(images, labels, classes, test_images, test_labels)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64)
        images = data.reshape(len(data), 3, 32, 32)
    except (KeyError, TypeError, ValueError) as exc:
        raise TuneTLError(f"{path}: not a CIFAR-10 batch (expected 'data' of shape (N, 3072) and 'labels'): {exc}") from None
    if len(labels) != len(images):
        raise TuneTLError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _unpickle(path: Path) -> dict:
    raw = load_restricted(path, CIFAR_GLOBALS, what="CIFAR-10 batch file")  # Python 2 pickles: latin1, as torchvision reads them
    if not isinstance(raw, dict):
        raise TuneTLError(f"{path}: not a CIFAR-10 batch (a pickled dict expected, got {type(raw).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
