"""Train a head on cached backbone features when the backbone is frozen and the inputs never change.

Which blocks an epoch may read from a cache is one rule (:func:`cached_prefix_blocks`): the leading
blocks that are frozen (so they run in eval mode: no BatchNorm updates, no dropout), provided no
parameter changes the inputs from one epoch to the next (:func:`cache_blockers`). When that is the whole
backbone, each image's pooled features are the same in every such epoch of every trial with the same
weights, resolution and data: they are computed once (:func:`encode`), kept in the search's
:class:`~tune_tl.training.feature_cache.FeatureCache`, and the head trains on them. A frozen prefix
short of the whole backbone is cached in memory for one trial instead (``training.boundary_cache``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from tune_tl.data.augment import AugmentConfig
from tune_tl.data.manifest import fingerprint_arrays
from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import FileSplit, Split
from tune_tl.models import Backbone, FreezePolicy, TransferModel
from tune_tl.models.folding import folded
from tune_tl.training.batches import amp, batches, frozen_dtype, in_order, to_device
from tune_tl.training.feature_cache import FeatureCache, fingerprint_module, make_key
from tune_tl.training.regularisers import RegulariseConfig

log = logging.getLogger(__name__)


def cache_blockers(augment: AugmentConfig, regularise: RegulariseConfig) -> list[str]:
    """The parameters that make a trial's inputs differ every epoch, so its frozen features cannot be cached."""
    on = {"aug_crop_scale": augment.crop_scale < 1.0, "aug_flip": augment.flip, "aug_rotate": augment.rotate > 0,
          "aug_jitter": augment.jitter > 0, "auto_augment": augment.auto_augment != "none",
          "mixup_alpha": regularise.mixup_alpha > 0, "cutmix_alpha": regularise.cutmix_alpha > 0}
    return [name for name, active in on.items() if active]


#: Every parameter that can keep a trial off the cache (the names :func:`cache_blockers` returns).
INPUT_VARYING_PARAMS = tuple(cache_blockers(AugmentConfig(0.5, True, 1.0, 0.5, "randaugment"), RegulariseConfig(0.0, 1.0, 1.0)))


def cached_prefix_blocks(policy: FreezePolicy, backbone: Backbone, augment: AugmentConfig, regularise: RegulariseConfig,
                         probing: bool = False) -> int:
    """How many leading backbone blocks an epoch reads from a cache instead of running them.

    The one rule, for the training loop and for anyone who predicts a trial's cost from its config:

    * ``len(backbone.blocks)``: the whole backbone is frozen (``head_only``, ``freeze_blocks: all``, the
      probe epochs of LP→FT): the head trains on pooled features from the search's disk cache.
    * k in between: the first k blocks are frozen (``prefix`` with ``freeze_blocks`` k, or ``surgical``
      with ``train_block`` k) and the backbone is ``chainable``: their output is cached in memory
      (``training.boundary_cache``) and each epoch runs ``blocks[k:]``, pooling and head.
    * 0: nothing is cached: the inputs change every epoch (:func:`cache_blockers`), the first block
      trains, or the backbone's blocks are not a chain (timm models).

    ``fit`` applies it only with its feature cache on (``--no-feature-cache`` turns both caches off) and
    in-memory data (not the streaming path), and falls back to running every block, saying so once in
    the log, when a boundary's activations would not fit in their memory cap.

    Example:
        >>> from tune_tl.config import TrialConfig
        >>> from tune_tl.training.recipe import augment_config, freeze_policy, regularise_config
        >>> cfg = TrialConfig.from_dict({"freeze_blocks": 5})
        >>> cached_prefix_blocks(freeze_policy(cfg), backbone, augment_config(cfg), regularise_config(cfg))  # doctest: +SKIP
        5
    """
    n = len(backbone.blocks)
    return cached_blocks(n if probing else policy.frozen_prefix(n), n, backbone.chainable, bool(cache_blockers(augment, regularise)))


def cached_blocks(frozen_prefix: int, num_blocks: int, chainable: bool, inputs_change: bool) -> int:
    """:func:`cached_prefix_blocks` on plain facts (the cost model asks it with no backbone at hand)."""
    if inputs_change:
        return 0
    return frozen_prefix if frozen_prefix == num_blocks or chainable else 0


def model_cached_blocks(model: nn.Module, augment: AugmentConfig, regularise: RegulariseConfig) -> int:
    """:func:`cached_prefix_blocks` of ``model`` as it is now (LP→FT's probing included); 0 for a model that is not a ``TransferModel``."""
    if not isinstance(model, TransferModel):
        return 0
    return cached_prefix_blocks(model.policy, model.backbone, augment, regularise, model.probing)


def features_cacheable(model: nn.Module, augment: AugmentConfig, regularise: RegulariseConfig) -> bool:
    """Whether this epoch's pooled backbone features are a fixed function of each image (see the module docstring)."""
    return isinstance(model, TransferModel) and model_cached_blocks(model, augment, regularise) == model.num_blocks


def log_cache_blocked(model: nn.Module, augment: AugmentConfig, regularise: RegulariseConfig) -> None:
    """Say why frozen blocks run every epoch although the feature cache is on."""
    frozen, blockers = getattr(model, "frozen_blocks", 0), cache_blockers(augment, regularise)
    if frozen and blockers:
        log.info("feature cache off for this trial: backbone blocks are frozen but the inputs change every epoch (%s)", ", ".join(blockers))
    elif 0 < frozen < model.num_blocks and not model.backbone.chainable:
        log.info("boundary cache off for this trial: the blocks of %s are parameter groups, not a chain that can run from a "
                 "frozen prefix; its %d frozen blocks run every batch", model.backbone.name, frozen)


def frozen_features(model: nn.Module, split: Split, cache: str, normalise: Normaliser, batch_size: int,
                    resident=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled backbone features of every train and val image, from the shared cache or computed once."""
    name = getattr(getattr(model, "backbone", None), "name", type(model.features).__name__)
    arrays = pooled_features(name, model.features, split, normalise, batch_size, cache, resident)
    return torch.from_numpy(arrays["train"]).to(normalise.device), torch.from_numpy(arrays["val"]).to(normalise.device)


def pooled_features(name: str, features: nn.Module, split: Split | FileSplit, normalise: Normaliser, batch_size: int,
                    cache: str | None, resident=None, dtype: torch.dtype | None = None) -> dict[str, np.ndarray]:
    """``{"train", "val"}`` pooled features of backbone ``name`` (its ``features`` module, eval mode), through the
    shared cache when ``cache`` names one: a trial's head-only epochs and the search's probes read the same entry.
    Computed in ``dtype`` (default: ``batches.frozen_dtype``)."""
    dtype = dtype or frozen_dtype(normalise.device)
    key = pooled_key(name, features, split, normalise, dtype)

    def compute() -> dict[str, np.ndarray]:
        return {part: encode(features, split, part, normalise, batch_size, resident, dtype=dtype) for part in ("train", "val")}

    if cache is None:
        return compute()
    return FeatureCache(cache).load_or_compute(key, compute, {"train": len(split.train_y), "val": len(split.val_y)})


def pooled_key(name: str, features: nn.Module, split: Split | FileSplit, normalise: Normaliser, dtype: torch.dtype | None = None) -> str:
    """What identifies backbone ``name``'s pooled features on ``split``: its weights, input statistics, size and images,
    and what they were computed in (``dtype``, default ``batches.frozen_dtype``)."""
    return make_key(
        backbone=name,
        weights=fingerprint_module(features),
        mean=normalise.mean_values, std=normalise.std_values,
        resolution=split.resolution,
        cut="pooled",  # after every block: the cut point
        data=split_fingerprint(split),
        device=normalise.device.type,  # GPU (AMP) and CPU features differ in the last bits
        precision=str(dtype or frozen_dtype(normalise.device)),
    )


@torch.no_grad()
def float32_slowdown(features: nn.Module, split: Split | FileSplit, normalise: Normaliser) -> float:
    """How many times longer ``features`` runs ``split``'s train images (one batch) in float32 than in
    ``batches.frozen_dtype`` (1.0 where that is float32): a folded copy in each, timed on its second call (the first
    pays oneDNN's one-off costs for the shape). Trials train in float32, so the probes' seconds are scaled by it where
    they price a trial (``ProbeBudget.float32_factor``). Timing whole ``pooled_features`` calls instead, 32 images
    at 224 px gave 1.2-1.9 (the fold's fixed cost in both) against the probes' 1.5-2.4."""
    dtype = frozen_dtype(normalise.device)
    if dtype == torch.float32:
        return 1.0
    images, labels = next(batches(split, "train", in_order(len(split.train_y), len(split.train_y))))
    x = to_device(images, labels, normalise)[0]
    was_training = features.training
    features.eval()
    seconds = {}
    for each in (dtype, torch.float32):
        fast, inputs = folded(features, x[:2], each), x.to(each)
        fast(inputs)
        started = time.perf_counter()
        fast(inputs)
        seconds[each] = time.perf_counter() - started
    features.train(was_training)
    return max(1.0, seconds[torch.float32] / seconds[dtype])


def split_fingerprint(split: Split | FileSplit) -> str:
    """What identifies a split's images and labels: its pixels, or (streamed) its file names."""
    if isinstance(split, FileSplit):
        return fingerprint_arrays(np.array(split.train_files), split.train_y, np.array(split.val_files), split.val_y)
    return fingerprint_arrays(split.train_x, split.train_y, split.val_x, split.val_y)


@torch.no_grad()
def encode(features: nn.Module, split: Split | FileSplit, part: str, normalise: Normaliser, batch_size: int,
           resident=None, num_workers: int = 0, dtype: torch.dtype | None = None) -> np.ndarray:
    """Pooled features (float32, one row per image, in order) of ``split``'s ``part``, never augmented, computed in
    ``dtype`` (default: ``batches.frozen_dtype``)."""
    was_training = features.training
    features.eval()
    autocast, _ = amp(normalise.device)
    dtype = dtype or frozen_dtype(normalise.device)
    out, fast = [], None
    for images, labels in batches(split, part, in_order(len(getattr(split, f"{part}_y")), batch_size), num_workers, resident):
        x, _ = to_device(images, labels, normalise)
        if fast is None:  # batch norms folded into their convolutions: the same features, sooner (models.folding)
            fast = folded(features, x[:2], dtype)
        with autocast:
            out.append(fast(x.to(dtype)).float().cpu())
    features.train(was_training)
    return torch.cat(out).numpy()
