"""Validation loss, accuracy and class probabilities of a model (or of what follows a cache, on cached rows),
never augmented.

The batches are the validation images in order, ``batch_size`` at a time, so ``tune-tl predict`` on the
same images (same batches, same preprocessing) reproduces a trial's recorded accuracy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import FileSplit, Split
from tune_tl.training.batches import batches, in_order, to_device
from tune_tl.training.device import resident_split


class Evaluation(NamedTuple):
    """What one pass over the validation images measured."""

    loss: float  # mean cross-entropy
    acc: float
    #: ``(images, classes)`` softmax of the logits, float32, in val order: what an ensemble is selected on
    #: (``search.val_predictions`` keeps the best epoch's, saved with its checkpoint).
    probs: np.ndarray


@torch.no_grad()
def evaluate_split(model: nn.Module, split: Split | FileSplit, normalise: Normaliser, batch_size: int = 256,
                   resident=None, num_workers: int = 0) -> Evaluation:
    """``model`` on ``split``'s validation images.

    ``resident`` is ``fit``'s ``resident_split``; ``None`` decides here whether the val images go to the GPU.
    """
    if resident is None:
        resident = resident_split(split, normalise.device, ("val",))
    model.eval()
    logits, targets = [], []
    for images, labels in batches(split, "val", in_order(len(split.val_y), batch_size), num_workers, resident):
        x, y = to_device(images, labels, normalise)
        logits.append(model(x).float())
        targets.append(y)
    return _measured(logits, targets)


@torch.no_grad()
def evaluate_cached(module: nn.Module, rows: torch.Tensor, labels: np.ndarray, batch_size: int = 256) -> Evaluation:
    """``module`` on cached validation ``rows``, in order.

    ``module`` is what follows the cache: the head on pooled features, or ``TransferModel.from_block(k)`` on
    the activations of the first k blocks.
    """
    module.eval()
    y = torch.tensor(labels, device=rows.device)  # a copy: Ray's arrays are read-only, from_numpy would warn
    starts = range(0, len(labels), batch_size)
    return _measured([module(rows[s : s + batch_size]).float() for s in starts], [y[s : s + batch_size] for s in starts])


def _measured(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> Evaluation:
    if not logits:
        return Evaluation(0.0, 0.0, np.zeros((0, 0), np.float32))
    out, y = torch.cat(logits), torch.cat(targets)
    n = len(y)  # an exact fraction of images, as tune-tl predict counts them (a float32 mean is off in the 9th digit)
    return Evaluation(F.cross_entropy(out, y, reduction="sum").item() / n, int((out.argmax(1) == y).sum()) / n,
                      torch.softmax(out, 1).cpu().numpy().astype(np.float32))
