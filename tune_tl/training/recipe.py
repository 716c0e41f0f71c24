"""The recipe of a trial, without Ray: ``build_trial(config, context, device) -> TrialPlan``.

A plan is everything a config means: the data split at its resolution, the model (pretrained
backbone, fresh head, frozen per its policy), the optimiser's parameter groups, the ``FitConfig``
(schedule, optimiser, augmentation) and the input ``Preprocessing``. The trainable, retrain,
export and the benchmarks all build a trial here, so a config means the same model and the same
training wherever it is run; ``training.loop.fit`` runs a plan::

    plan = build_trial(config, context, "cpu")
    fit(plan.model, plan.split, plan.fit, param_groups=plan.param_groups)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tune_tl.config.params import PARAMS, TrialConfig, parse_milestones
from tune_tl.data.augment import AugmentConfig
from tune_tl.data.preprocess import Preprocessing
from tune_tl.data.types import FileSplit, Split
from tune_tl.errors import TuneTLError
from tune_tl.models import Backbone, FreezePolicy, TransferModel, build_backbone, build_head, param_groups, registry
from tune_tl.training.context import TrialContext
from tune_tl.training.frozen_features import cache_blockers
from tune_tl.training.loop import FitConfig
from tune_tl.training.regularisers import RegulariseConfig
from tune_tl.training.schedules import ScheduleConfig


def build_model(cfg: TrialConfig, ctx: TrialContext) -> TransferModel:
    """The trial's network: the shared pretrained backbone + its head, frozen per the trial's policy.

    The head is fresh (seeded), or with ``head_init: probe`` the head stage 0 fitted for the trial's backbone and
    resolution when there is one (LP→FT, no LP epochs): a linear probe on one scale for all features
    (``training.linear_probe.fit_start_head``). Larger than a fresh head, it is scaled down to a fresh head's norm,
    which keeps its predictions (a temperature): at full size its first gradients wrecked the backbone (digits, a
    whole-model fine-tune at lr 1e-3, from a probe of norm ~500: 87 % → 30 % after one epoch; scaled: 97 %, above a
    fresh head's 96.7 %). A search from before start heads were kept passes its probes' own heads.
    """
    torch.manual_seed(ctx.seed)
    registry.restore(ctx.families)  # a Ray worker never ran the driver's register_backbone calls
    name, weights = ctx.backbone_for(cfg)
    model = build_network(cfg, build_backbone(name, weights), ctx.data.num_classes)
    probe = ctx.probe_heads.get((name, cfg.resolution)) if cfg.head_init == "probe" else None
    if probe is not None:
        linear = model.head if isinstance(model.head, nn.Linear) else model.head[-1]  # a linear head, maybe after dropout
        with torch.no_grad():
            scale = min(1.0, float(linear.weight.norm()) / max(float(probe[0].norm()), 1e-12))
            linear.weight.copy_(probe[0] * scale)
            linear.bias.copy_(probe[1] * scale)
    return model


def build_network(cfg: TrialConfig, backbone: Backbone, num_classes: int) -> TransferModel:
    """``backbone`` + the config's head for ``num_classes``, frozen per the config's policy: the one place a
    config becomes a network (trials, export and ``predict`` all build it here)."""
    head = build_head(cfg.head, backbone.num_features, num_classes, cfg.head_hidden, cfg.head_dropout or 0.0)
    model = TransferModel(backbone, head)
    model.apply_policy(freeze_policy(cfg))
    return model


def augment_config(cfg: TrialConfig) -> AugmentConfig:
    """The trial's augmentation parameters as ``train.py`` takes them."""
    return AugmentConfig(crop_scale=cfg.aug_crop_scale, flip=bool(cfg.aug_flip), rotate=cfg.aug_rotate, jitter=cfg.aug_jitter,
                         auto_augment=cfg.auto_augment)


def schedule_config(cfg: TrialConfig) -> ScheduleConfig:
    """The trial's learning-rate schedule; settings of other schedules (``None``) take their defaults."""
    def value(name: str):
        v = getattr(cfg, name)
        return PARAMS[name].default if v is None else v

    return ScheduleConfig(
        name=cfg.schedule,
        step_size=value("step_size"),
        gamma=value("gamma"),
        milestones=parse_milestones(value("milestones")),
        warmup_epochs=cfg.warmup_epochs,
    )


def inputs_vary(cfg: TrialConfig) -> bool:
    """Whether the trial's training inputs change every epoch (so frozen backbone features are never cached)."""
    return bool(cache_blockers(augment_config(cfg), regularise_config(cfg)))


def regularise_config(cfg: TrialConfig) -> RegulariseConfig:
    return RegulariseConfig(label_smoothing=cfg.label_smoothing, mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, l2sp=cfg.l2sp)


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
        nesterov=bool(cfg.nesterov) if cfg.nesterov is not None else True,
        mean=model.backbone.mean,
        std=model.backbone.std,
        seed=ctx.seed,
        device=device,
        augment=augment_config(cfg),
        num_workers=num_workers,
        lp_epochs=min(cfg.lp_epochs, ctx.max_epochs),
        first_epoch_fraction=cfg.first_epoch_fraction,
        feature_cache=ctx.feature_cache,
        schedule=schedule_config(cfg),
        regularise=regularise_config(cfg),
        num_classes=ctx.data.num_classes,
    )


@dataclass(frozen=True)
class TrialPlan:
    """A trial ready to train: what ``fit`` needs, plus how its inputs are preprocessed."""

    config: TrialConfig
    split: Split | FileSplit
    model: TransferModel
    param_groups: list[dict]
    fit: FitConfig
    preprocessing: Preprocessing

    @property
    def augment(self) -> AugmentConfig:
        return self.fit.augment


def build_trial(config: TrialConfig | Mapping[str, Any], context: TrialContext, device: str, num_workers: int = 0) -> TrialPlan:
    """The plan of ``config`` (a ``TrialConfig`` or its dict) on ``context``'s data and backbone.

    Raises:
        TuneTLError: The data was not prepared at the config's resolution.
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(dict(config))
    if cfg.resolution not in context.data.splits:
        raise TuneTLError(f"resolution {cfg.resolution} was not prepared (prepared: {sorted(context.data.splits)}); "
                          "list it under params.resolution in the space file")
    model = build_model(cfg, context)
    groups = param_groups(model, cfg.head_lr_mult, cfg.layer_decay)
    fcfg = fit_config(cfg, context, model, device, num_workers)
    pre = preprocessing(cfg, model)
    return TrialPlan(cfg, context.data.splits[cfg.resolution], model, groups, fcfg, pre)


def preprocessing(cfg: TrialConfig, model: TransferModel) -> Preprocessing:
    """The input rule of this trial's model: its resolution and its backbone's mean/std."""
    return Preprocessing(cfg.resolution, tuple(model.backbone.mean), tuple(model.backbone.std))
