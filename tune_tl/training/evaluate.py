"""Validation loss and accuracy of a model (or of what follows a cache, on cached rows), never augmented.

The batches are the validation images in order, ``batch_size`` at a time, so ``tune-tl predict`` on the
same images (same batches, same preprocessing) reproduces a trial's recorded accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import FileSplit, Split
from tune_tl.training.batches import batches, in_order, to_device
from tune_tl.training.device import resident_split


@torch.no_grad()
def evaluate_split(model: nn.Module, split: Split | FileSplit, normalise: Normaliser, batch_size: int = 256,
                   resident=None, num_workers: int = 0) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split``'s validation images.

    ``resident`` is ``fit``'s ``resident_split``; ``None`` decides here whether the val images go to the GPU.
    """
    if resident is None:
        resident = resident_split(split, normalise.device, ("val",))
    model.eval()
    loss_sum, correct = 0.0, 0
    for images, labels in batches(split, "val", in_order(len(split.val_y), batch_size), num_workers, resident):
        x, y = to_device(images, labels, normalise)
        logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    n = max(len(split.val_y), 1)
    return loss_sum / n, correct / n


@torch.no_grad()
def evaluate_cached(module: nn.Module, rows: torch.Tensor, labels: np.ndarray, batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``module`` on cached validation ``rows``, in order.

    ``module`` is what follows the cache: the head on pooled features, or ``TransferModel.from_block(k)`` on
    the activations of the first k blocks.
    """
    module.eval()
    y = torch.tensor(labels, device=rows.device)  # a copy: Ray's arrays are read-only, from_numpy would warn
    loss_sum, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        logits = module(rows[start : start + batch_size]).float()
        target = y[start : start + batch_size]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    n = max(len(labels), 1)
    return loss_sum / n, correct / n
