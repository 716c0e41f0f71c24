"""Activations at the freeze boundary: a frozen prefix's output for every image, computed once per trial.

A trial's first k frozen blocks run in eval mode (``TransferModel.train``), so they compute a fixed
function of their input; when the inputs never change either (``frozen_features.cached_prefix_blocks``),
every epoch would run them again on the same images to the same output. ``fit`` computes that output
once instead (:func:`boundary_activations`), keeps it on the trial's device in float32 (on CUDA the
training images' autocast output, upcast), and trains on it with ``blocks[k:]``, pooling and head only
(``TransferModel.from_block``): ``freeze_blocks = n - 1`` costs about one block per epoch. The trainable
blocks run as before, BatchNorm statistics included; only the frozen prefix is cached.

Unlike pooled features these activations are large (Lite0's stem output at 224 px is 1.6 MB per image)
and belong to one trial, so they stay in memory, never on disk, and only within a cap
(:func:`memory_cap`: a quarter of the device's free memory, or ``FitConfig.boundary_cache_bytes``).
Above the cap the trial runs every block, as it would without the cache.

    >>> if boundary_bytes(model, 5, split, normalise) <= memory_cap(normalise.device):
    ...     train, val = boundary_activations(model, 5, split, normalise, batch_size=256)
"""

from __future__ import annotations

import contextlib

import torch

from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import Split
from tune_tl.models import Backbone, TransferModel
from tune_tl.models.folding import folded_blocks
from tune_tl.training.batches import amp, batches, in_order, to_device
from tune_tl.training.device import free_memory, memory_format

#: Largest share of the device's free memory (the host's available RAM on CPU) one trial's cache may take.
MEMORY_FRACTION = 0.25

FLOAT32_BYTES = 4


def memory_cap(device: torch.device, limit: int | None = None) -> int:
    """Most bytes a trial's boundary activations may take: ``limit`` if given, else ``MEMORY_FRACTION`` of what is free now."""
    return limit if limit is not None else int(MEMORY_FRACTION * free_memory(device))


@torch.no_grad()
def boundary_bytes(model: TransferModel, blocks: int, split: Split, normalise: Normaliser) -> int:
    """Bytes the output of the first ``blocks`` blocks takes for every train and val image, measured on one image."""
    x, _ = to_device(torch.tensor(split.train_x[:1]), torch.zeros(1), normalise)  # a copy: Ray's arrays are read-only
    with _eval_mode(model):
        one = _prefix(model.backbone, blocks, x, contextlib.nullcontext())
    return one[0].numel() * FLOAT32_BYTES * (len(split.train_y) + len(split.val_y))


@torch.no_grad()
def boundary_activations(model: TransferModel, blocks: int, split: Split, normalise: Normaliser, batch_size: int,
                         resident=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The output of ``model``'s first ``blocks`` blocks for every train and val image, in order, never augmented.

    Float32 on ``normalise.device``; ``resident`` is ``fit``'s GPU copy of the images (``training.device``).
    """
    device = normalise.device
    out, fast = [], None
    with _eval_mode(model):
        for part in ("train", "val"):
            n = len(getattr(split, f"{part}_y"))
            indices = in_order(n, batch_size)
            # As the uncached run computes them: training batches under autocast (CUDA), validation in float32.
            autocast = amp(device)[0] if part == "train" else contextlib.nullcontext()
            rows = None
            for idx, (images, labels) in zip(indices, batches(split, part, indices, 0, resident), strict=False):
                x = to_device(images, labels, normalise)[0]
                if fast is None:  # batch norms folded into their convolutions: the same activations, sooner (models.folding)
                    fast = folded_blocks(model.backbone, x[:2])
                y = _prefix(fast, blocks, x, autocast)
                if rows is None:
                    layout = memory_format(device) if y.dim() == 4 else torch.contiguous_format
                    rows = torch.empty((n, *y.shape[1:]), device=device, memory_format=layout)
                rows[idx[0] : idx[-1] + 1] = y
            out.append(rows)
    return out[0], out[1]


def _prefix(backbone: Backbone, blocks: int, x: torch.Tensor, autocast) -> torch.Tensor:
    """``backbone``'s first ``blocks`` blocks on ``x`` (under ``autocast``), as float32."""
    with autocast:
        return backbone.run_blocks(x, 0, blocks).float()


@contextlib.contextmanager
def _eval_mode(model: TransferModel):
    """Frozen blocks run in eval mode in training too; this makes it so whatever mode the caller left."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
