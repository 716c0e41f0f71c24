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

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from tune_tl.config.params import PARAMS, TrialConfig, parse_milestones
from tune_tl.data.augment import AugmentConfig
from tune_tl.data.preprocess import Preprocessing
from tune_tl.data.types import FileSplit, PreparedData, Split
from tune_tl.errors import TuneTLError
from tune_tl.models import FreezePolicy, TransferModel, build_backbone, build_head, param_groups
from tune_tl.training.loop import FitConfig
from tune_tl.training.regularisers import RegulariseConfig
from tune_tl.training.schedules import ScheduleConfig


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
    #: Every candidate's weights (name -> state) when the backbone is a search parameter; they travel to
    #: Ray's object store once, with the context. Empty: ``backbone_name`` is the only backbone.
    backbone_states: Mapping[str, Mapping[str, torch.Tensor]] = field(default_factory=dict)

    def backbone_for(self, cfg: TrialConfig) -> tuple[str, Mapping[str, torch.Tensor] | str]:
        """The (name, weights) a trial builds: its config's ``backbone``, else the search's one backbone."""
        name = cfg.backbone or self.backbone_name
        if name in self.backbone_states:
            return name, self.backbone_states[name]
        if name == self.backbone_name:
            return name, self.backbone_state
        raise TuneTLError(f"trial config: backbone {name!r} is not one of this search's backbones "
                          f"({', '.join(self.backbone_states) or self.backbone_name})")


def build_model(cfg: TrialConfig, ctx: TrialContext) -> TransferModel:
    """The trial's network: shared pretrained backbone + fresh head, frozen per the trial's policy."""
    torch.manual_seed(ctx.seed)
    backbone = build_backbone(*ctx.backbone_for(cfg))
    head = build_head(cfg.head, backbone.num_features, ctx.data.num_classes, cfg.head_hidden, cfg.head_dropout or 0.0)
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


#: Parameters that, away from their default (off), change a trial's inputs every epoch: no feature cache then.
INPUT_VARYING_PARAMS = ("aug_crop_scale", "aug_flip", "aug_rotate", "aug_jitter", "auto_augment", "mixup_alpha", "cutmix_alpha")


def inputs_vary(cfg: TrialConfig) -> bool:
    """Whether the trial's training inputs change every epoch (so frozen backbone features are never cached)."""
    return augment_config(cfg).active or regularise_config(cfg).mixes


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
