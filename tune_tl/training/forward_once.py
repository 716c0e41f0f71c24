"""Forward once, train many: a probe's one pass over the images keeps what fine-tunes start from.

A probe runs its frozen backbone over every train and val image to get pooled features. On the way, the
same pass goes through the freeze boundaries that prefix-frozen fine-tunes use: the output of the first k
blocks is exactly what ``training.boundary_cache`` would compute again, per trial, before that trial's first
epoch (on 2 cores, a minute or more at 224 px). So the pass keeps those activations too, as float16 entries
of the search's feature cache (``<search>/feature_cache``, on disk, read back through the page cache), and a
fine-tune whose frozen prefix ends at a kept boundary trains from them from its first epoch: only its
trainable blocks run.

Which boundaries: the top ones (the inputs to the last blocks, where fine-tunes on a few thousand images
mostly freeze), going down while their float16 bytes fit :data:`BUDGET_BYTES` per backbone and resolution.
Lite0 at 224 px keeps k = 8 … 4 (188 kB an image); the stem's output alone would be 800 kB.

    >>> pooled = forward_once(backbone, split, normalise, batch_size=128, cache="results/s/feature_cache")
    >>> rows = probe_boundary(model.backbone, 7, split, normalise, "results/s/feature_cache")  # None if not kept
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import FileSplit, Split
from tune_tl.models import Backbone
from tune_tl.models.folding import folded_blocks
from tune_tl.training.batches import amp, batches, frozen_dtype, in_order, to_device
from tune_tl.training.device import memory_format
from tune_tl.training.feature_cache import FeatureCache, fingerprint_module, make_key
from tune_tl.training.frozen_features import pooled_features, pooled_key, split_fingerprint

log = logging.getLogger(__name__)

#: Most float16 bytes the kept boundaries of one backbone at one resolution may take (train + val images).
BUDGET_BYTES = 512 * 2**20
FLOAT16_BYTES = 2
PARTS = ("train", "val")


def boundary_cuts(backbone: Backbone, split: Split | FileSplit, budget: int = BUDGET_BYTES) -> tuple[int, ...]:
    """The freeze boundaries (block counts k, ``0 < k < len(blocks)``) a probe's pass keeps, top first.

    None for a backbone whose blocks are not a chain (timm's), or for streamed data (no fixed pixels to key on).
    """
    if not backbone.chainable or isinstance(split, FileSplit):
        return ()
    images = len(split.train_y) + len(split.val_y)
    x = torch.zeros(1, 3, split.resolution, split.resolution)
    sizes = []
    was_training = backbone.features.training
    backbone.features.eval()
    with torch.no_grad():
        for block in backbone.blocks[:-1]:
            x = block(x.to(next(block.parameters(), torch.zeros(())).device))
            sizes.append(x[0].numel() * FLOAT16_BYTES * images)
    backbone.features.train(was_training)
    cuts, total = [], 0
    for k in range(len(sizes), 0, -1):
        total += sizes[k - 1]
        if total > budget:
            break
        cuts.append(k)
    return tuple(cuts)


def boundary_key(backbone: Backbone, cut: int, split: Split, normalise: Normaliser) -> str:
    """What identifies the output of ``backbone``'s first ``cut`` blocks on ``split``: the prefix's own weights, so a
    probe's pass and a fine-tune (whose prefix is frozen at the same pretrained weights) name the same entry."""
    return make_key(backbone=backbone.name, weights=fingerprint_module(nn.ModuleList(backbone.blocks[:cut])),
                    mean=normalise.mean_values, std=normalise.std_values, resolution=split.resolution, cut=cut,
                    data=split_fingerprint(split), device=normalise.device.type, precision=str(frozen_dtype(normalise.device)))


def forward_once(backbone: Backbone, split: Split | FileSplit, normalise: Normaliser, batch_size: int, cache: str | None,
                 cuts: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """``{"train", "val"}`` pooled features of ``backbone``, keeping the activations at ``cuts`` (default:
    :func:`boundary_cuts`) in ``cache`` from the same pass. Without a cache, or with nothing to keep, the plain
    pooled features (``frozen_features.pooled_features``)."""
    cuts = boundary_cuts(backbone, split) if cuts is None else cuts
    if cache is None or not cuts:
        return pooled_features(backbone.name, backbone.features, split, normalise, batch_size, cache)
    store, rows = FeatureCache(cache), {part: len(getattr(split, f"{part}_y")) for part in PARTS}
    keys = {k: boundary_key(backbone, k, split, normalise) for k in cuts}
    pooled = pooled_key(backbone.name, backbone.features, split, normalise)
    if store.has(pooled, rows) and all(store.has(key, rows) for key in keys.values()):
        return pooled_features(backbone.name, backbone.features, split, normalise, batch_size, cache)
    arrays = {part: _pass(backbone, split, part, normalise, batch_size, cuts) for part in PARTS}
    for k, key in keys.items():
        store.put(key, {part: arrays[part][k] for part in PARTS}, dtype=np.float16)
    log.info("forward once: kept the activations at blocks %s of %s (%d px) for fine-tunes' frozen prefixes",
             ", ".join(map(str, sorted(cuts))), backbone.name, split.resolution)
    return store.load_or_compute(pooled, lambda: {part: arrays[part]["pooled"] for part in PARTS}, rows)


def probe_boundary(backbone: Backbone, cut: int, split: Split | FileSplit, normalise: Normaliser,
                   cache: str | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The probe pass's activations after ``backbone``'s first ``cut`` blocks, as float32 train and val tensors on
    ``normalise``'s device, or ``None`` when the pass did not keep them (then the trial computes its own)."""
    if cache is None or isinstance(split, FileSplit):
        return None
    rows = {part: len(getattr(split, f"{part}_y")) for part in PARTS}
    arrays = FeatureCache(cache).get(boundary_key(backbone, cut, split, normalise), rows)
    if arrays is None:
        return None
    device = normalise.device
    out = []
    for part in PARTS:
        t = torch.from_numpy(arrays[part]).to(device).float()
        out.append(t.contiguous(memory_format=memory_format(device)) if t.dim() == 4 else t)
    return out[0], out[1]


@torch.no_grad()
def _pass(backbone: Backbone, split: Split, part: str, normalise: Normaliser, batch_size: int,
          cuts: tuple[int, ...]) -> dict:
    """One eval-mode pass over ``part``, in ``batches.frozen_dtype``: pooled features (float32) and the float16
    activations after each cut."""
    was_training = backbone.features.training
    backbone.features.eval()
    autocast, dtype = amp(normalise.device)[0], frozen_dtype(normalise.device)
    n = len(getattr(split, f"{part}_y"))
    out: dict = {"pooled": []} | {k: [] for k in cuts}
    fast = None
    for images, labels in batches(split, part, in_order(n, batch_size)):
        x = to_device(images, labels, normalise)[0]
        if fast is None:  # batch norms folded into their convolutions: the same outputs, sooner (models.folding)
            fast = folded_blocks(backbone, x[:2], dtype)
        x = x.to(dtype)
        start = 0
        with autocast:
            for k in sorted(cuts):
                x = fast.run_blocks(x, start, k)
                out[k].append(x.float().half().cpu())
                start = k
            out["pooled"].append(fast.pool(fast.run_blocks(x, start).float()).float().cpu())  # pooling's own weights, if any, are float32
    backbone.features.train(was_training)
    return {k: torch.cat(v).numpy() for k, v in out.items()}
