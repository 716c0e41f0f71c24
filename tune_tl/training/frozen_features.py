"""Train a head on cached backbone features when the backbone is frozen and the inputs never change.

Whether an epoch can use the cache is one rule (:func:`features_cacheable`): the whole backbone is frozen
(so it runs in eval mode: no BatchNorm updates, no dropout) and no parameter changes the inputs from one
epoch to the next (:func:`cache_blockers`). Then each image's pooled features are the same in every such
epoch of every trial with the same weights, resolution and data: they are computed once
(:func:`encode`), kept in the search's :class:`~tune_tl.training.feature_cache.FeatureCache`, and the
head trains on them.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from tune_tl.data.augment import AugmentConfig
from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import FileSplit, Split
from tune_tl.training.batches import amp, batches, in_order, to_device
from tune_tl.training.feature_cache import FeatureCache, fingerprint_arrays, fingerprint_module, make_key
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


def features_cacheable(model: nn.Module, augment: AugmentConfig, regularise: RegulariseConfig) -> bool:
    """Whether this epoch's backbone output is a fixed function of each image (see the module docstring)."""
    return bool(getattr(model, "backbone_frozen", False)) and not cache_blockers(augment, regularise)


def log_cache_blocked(model: nn.Module, augment: AugmentConfig, regularise: RegulariseConfig) -> None:
    """Say why a frozen backbone runs every epoch although the feature cache is on."""
    blockers = cache_blockers(augment, regularise)
    if getattr(model, "backbone_frozen", False) and blockers:
        log.info("feature cache off for this trial: the backbone is frozen but the inputs change every epoch (%s)", ", ".join(blockers))


def frozen_features(model: nn.Module, split: Split, cache: str, normalise: Normaliser, batch_size: int,
                    resident=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled backbone features of every train and val image, from the shared cache or computed once."""
    name = getattr(getattr(model, "backbone", None), "name", type(model.features).__name__)
    arrays = pooled_features(name, model.features, split, normalise, batch_size, cache, resident)
    return torch.from_numpy(arrays["train"]).to(normalise.device), torch.from_numpy(arrays["val"]).to(normalise.device)


def pooled_features(name: str, features: nn.Module, split: Split | FileSplit, normalise: Normaliser, batch_size: int,
                    cache: str | None, resident=None) -> dict[str, np.ndarray]:
    """``{"train", "val"}`` pooled features of backbone ``name`` (its ``features`` module, eval mode), through the
    shared cache when ``cache`` names one: a trial's head-only epochs and the search's probes read the same entry."""
    key = make_key(
        backbone=name,
        weights=fingerprint_module(features),
        mean=normalise.mean_values, std=normalise.std_values,
        resolution=split.resolution,
        cut="pooled",  # after every block: the cut point
        data=split_fingerprint(split),
        device=normalise.device.type,  # GPU (AMP) and CPU features differ in the last bits
    )

    def compute() -> dict[str, np.ndarray]:
        return {part: encode(features, split, part, normalise, batch_size, resident) for part in ("train", "val")}

    if cache is None:
        return compute()
    return FeatureCache(cache).load_or_compute(key, compute, {"train": len(split.train_y), "val": len(split.val_y)})


def split_fingerprint(split: Split | FileSplit) -> str:
    """What identifies a split's images and labels: its pixels, or (streamed) its file names."""
    if isinstance(split, FileSplit):
        return fingerprint_arrays(np.array(split.train_files), split.train_y, np.array(split.val_files), split.val_y)
    return fingerprint_arrays(split.train_x, split.train_y, split.val_x, split.val_y)


@torch.no_grad()
def encode(features: nn.Module, split: Split | FileSplit, part: str, normalise: Normaliser, batch_size: int,
           resident=None, num_workers: int = 0) -> np.ndarray:
    """Pooled features (float32, one row per image, in order) of ``split``'s ``part``, never augmented."""
    was_training = features.training
    features.eval()
    autocast, _ = amp(normalise.device)
    out = []
    for images, labels in batches(split, part, in_order(len(getattr(split, f"{part}_y")), batch_size), num_workers, resident):
        x, _ = to_device(images, labels, normalise)
        with autocast:
            out.append(features(x).float().cpu())
    features.train(was_training)
    return torch.cat(out).numpy()
