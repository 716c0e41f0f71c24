"""Batches of a split on the trial's device: which indices, which uint8 pixels, and the normalised input.

In-memory arrays, the streaming path (files decoded per batch) and a GPU-resident copy all yield the same
images for the same indices, so a seed means the same batches wherever a trial runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import nullcontext

import numpy as np
import torch

from tune_tl.data.augment import Augment
from tune_tl.data.preprocess import Normaliser
from tune_tl.data.streaming import file_batches
from tune_tl.data.types import FileSplit, Split
from tune_tl.errors import TuneTLError
from tune_tl.training.device import cpu_runs_bfloat16, memory_format


def epoch_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """One epoch's training batches (sorted indices) from a permutation of the training set."""
    # BatchNorm cannot train on a single image, so a last batch of one is dropped.
    return [np.sort(b) for b in np.array_split(order, max(1, math.ceil(len(order) / batch_size))) if len(b) >= 2]


def in_order(n: int, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches: indices 0..n-1 in order, ``batch_size`` at a time."""
    return [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def batches(split: Split | FileSplit, part: str, indices: list[np.ndarray], num_workers: int = 0,
            resident=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 image and label tensors for each batch of indices into ``split``'s ``part`` (train, val, test).

    From the device copy when ``resident`` (``training.device.resident_split``) holds ``part``: same indices, same batches.
    """
    if resident and part in resident:
        images, labels = resident[part]
        for idx in indices:
            on_device = torch.from_numpy(idx).to(images.device)
            yield images[on_device], labels[on_device]
        return
    if isinstance(split, FileSplit):
        yield from file_batches(getattr(split, f"{part}_files"), getattr(split, f"{part}_y"), split.resolution, indices, num_workers)
        return
    images, labels = getattr(split, f"{part}_x"), getattr(split, f"{part}_y")
    for idx in indices:
        # Fancy indexing copies, so read-only arrays from Ray's object store are fine here.
        yield torch.from_numpy(images[idx]), torch.from_numpy(labels[idx])


def to_device(images: torch.Tensor, labels: torch.Tensor, normalise: Normaliser, augment: Augment | None = None):
    """The model's input: uint8 images on ``normalise``'s device, augmented (training only), normalised."""
    device = normalise.device
    x = images.to(device, non_blocking=True)
    if augment is not None:
        x = augment.policy(x)  # RandAugment / TrivialAugment on uint8, before the float augmentations
    x = x.float()
    if augment is not None:
        x = augment(x)
    x = normalise(x).contiguous(memory_format=memory_format(device))
    return x, labels.to(device, non_blocking=True)


#: The environment variable that overrides :func:`frozen_dtype`'s choice.
FROZEN_DTYPE_ENV = "TUNE_TL_FROZEN_DTYPE"


def frozen_dtype(device: torch.device) -> torch.dtype:
    """What a frozen backbone's no-grad passes compute in (the probes' pass, the boundaries it keeps, pooled features):
    bfloat16 weights and inputs on a CPU that multiplies bfloat16 natively (``device.cpu_runs_bfloat16``), else float32
    (CUDA's passes use :func:`amp`'s autocast). EfficientNet-Lite0 at 224 px, eval, 2 cores: 52 -> 124 images/s, the
    pooled features within 2 % (relative norm); the probes' val accuracies moved by about a point either way on four
    photo sets. Training and the passes that predict (test, ensemble, ``tune-tl predict``) stay float32.
    ``TUNE_TL_FROZEN_DTYPE=float32`` (or ``bfloat16``) decides instead, e.g. for features equal to the uncached run's."""
    chosen = os.environ.get(FROZEN_DTYPE_ENV, "").strip().lower()
    if chosen:
        if chosen not in ("float32", "bfloat16"):
            raise TuneTLError(f"{FROZEN_DTYPE_ENV}={chosen!r}: use float32 or bfloat16, or unset it to let tune_tl choose")
        return getattr(torch, chosen)
    return torch.bfloat16 if device.type == "cpu" and cpu_runs_bfloat16() else torch.float32


def check_frozen_dtype() -> None:
    """Refuse a bad ``TUNE_TL_FROZEN_DTYPE`` now: a search and a resume call it before Ray starts, where
    :func:`frozen_dtype` would otherwise raise first in stage 0 (after the data and Ray) or inside a trial."""
    frozen_dtype(torch.device("cpu"))


def amp(device: torch.device):
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling); none on CPU."""
    if device.type != "cuda":
        return nullcontext(), torch.amp.GradScaler("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype), torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
