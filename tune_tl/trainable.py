"""The Ray Tune function trainable: config → model → ``fit`` → ``tune.report`` each epoch.

The only module that calls ``tune.report``. Everything heavy (backbone weights, prepared images)
arrives through ``TrialContext``, which ``tune.with_parameters`` puts in Ray's object store once
for all trials: no trial reads a file or downloads anything (except on the streaming fallback,
where the data did not fit ``data.memory_budget_mb`` and trials decode image files per epoch).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Mapping

import torch

from tune_tl.data.augment import AugmentConfig
from tune_tl.data.types import PreparedData
from tune_tl.models import FreezePolicy, TransferModel, build_backbone, build_head, param_groups
from tune_tl.params import TrialConfig
from tune_tl.train import EpochMetrics, FitConfig, fit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialContext:
    """What every trial shares: the backbone's weights, the data, the epoch budget, the seed."""

    backbone_name: str
    backbone_state: Mapping[str, torch.Tensor]
    data: PreparedData
    max_epochs: int
    seed: int
    #: Folder of the shared frozen-feature cache (``<search>/feature_cache``); ``None`` disables it.
    feature_cache: str | None = None


def build_model(cfg: TrialConfig, ctx: TrialContext) -> TransferModel:
    """The trial's network: shared pretrained backbone + fresh head, frozen per the trial's policy."""
    torch.manual_seed(ctx.seed)
    backbone = build_backbone(ctx.backbone_name, ctx.backbone_state)
    head = build_head(cfg.head, backbone.num_features, ctx.data.num_classes, cfg.head_hidden, cfg.head_dropout or 0.0)
    model = TransferModel(backbone, head)
    model.apply_policy(freeze_policy(cfg))
    return model


def augment_config(cfg: TrialConfig) -> AugmentConfig:
    """The trial's augmentation parameters as ``train.py`` takes them."""
    return AugmentConfig(crop_scale=cfg.aug_crop_scale, flip=bool(cfg.aug_flip), rotate=cfg.aug_rotate, jitter=cfg.aug_jitter)


def freeze_policy(cfg: TrialConfig) -> FreezePolicy:
    """The trial's :class:`FreezePolicy` from its flat parameters."""
    return FreezePolicy(
        cfg.freeze_policy,
        freeze_blocks=cfg.freeze_blocks or 0,
        train_block=cfg.train_block or 0,
        bn_train=cfg.bn_stats != "frozen",
    )


def fit_config(cfg: TrialConfig, ctx: TrialContext, model: TransferModel, device: str, num_workers: int = 0) -> FitConfig:
    return FitConfig(
        epochs=ctx.max_epochs,
        batch_size=cfg.batch_size,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        mean=model.backbone.mean,
        std=model.backbone.std,
        seed=ctx.seed,
        device=device,
        augment=augment_config(cfg),
        num_workers=num_workers,
        lp_epochs=min(cfg.lp_epochs, ctx.max_epochs),
        feature_cache=ctx.feature_cache,
    )


def run_trial(config: dict, context: TrialContext) -> None:
    """Ray Tune entry point (wrapped by ``tune.with_parameters``)."""
    from ray import tune

    cfg = TrialConfig.from_dict(config)
    device = _trial_device()
    split = context.data.splits[cfg.resolution]
    model = build_model(cfg, context)

    node = _node_info()

    def report(metrics: EpochMetrics) -> None:
        tune.report({**dataclasses.asdict(metrics), **node})

    groups = param_groups(model, cfg.head_lr_mult, cfg.layer_decay)
    fit(model, split, fit_config(cfg, context, model, device, _loader_workers()), report, groups)


def _node_info() -> dict[str, str]:
    """Which Ray node runs this trial (recorded on every row, so cluster runs can be audited)."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}


def _trial_device() -> str:
    """CUDA when Ray gave this trial a GPU; otherwise CPU with torch threads = the trial's CPU share."""
    import ray

    if torch.cuda.is_available() and ray.get_gpu_ids():
        return "cuda"
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    return "cpu"


def _loader_workers() -> int:
    """Streaming path only: decode in as many worker processes as the trial has CPUs (none for one CPU)."""
    import ray

    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
    return cpus if cpus >= 2 else 0
