"""The fine-tuning loop: plain PyTorch, no Ray, readable top to bottom.

``fit`` trains a model on a split and calls ``on_epoch`` after every epoch; Ray Tune wraps it in
``search/trainable.py``, and a user can call it directly. With ``lp_epochs > 0`` the first epochs are a
linear probe (head only) and the model's freeze policy applies afterwards; epochs count across both
phases and each epoch's row says its ``phase``. When ``FitConfig.feature_cache`` names a folder and the
inputs never change, frozen leading blocks are not run again every epoch: a whole frozen backbone's
pooled features come from the disk cache (``training.frozen_features``) and the head trains on them; a
frozen prefix's activations are kept in memory (``training.boundary_cache``) and the rest of the model
trains on them: same result, a fraction of the time. ``training.epoch_inputs`` chooses, each epoch.
The model and batches are ``channels_last`` (twice as fast on the CPU for the Lites), and on CUDA in-memory
data sits on the GPU when it fits (``training.device``). Batches live in ``training.batches``, the schedule in ``training.schedules``,
the regularisers in ``training.regularisers``, the resumable state in ``training.state``.

    >>> metrics = fit(model, split, FitConfig(epochs=2, batch_size=64, lr=1e-3), print)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tune_tl.data.augment import Augment, AugmentConfig
from tune_tl.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Normaliser
from tune_tl.data.types import FileSplit, Split
from tune_tl.training.batches import amp, epoch_batches
from tune_tl.training.device import memory_format, resident_split
from tune_tl.training.epoch_inputs import EpochInputs
from tune_tl.training.regularisers import RegulariseConfig, batch_mixer, l2sp_penalty
from tune_tl.training.schedules import LRSchedule, ScheduleConfig, base_lr
from tune_tl.training.state import load_training_state, training_state


@dataclass(frozen=True)
class FitConfig:
    """How to train: the schedule and optimizer, plus where and how to compute."""

    epochs: int
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float | None = 0.9
    nesterov: bool = True  #: SGD only (and only with momentum > 0)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 256
    #: Training-time augmentation, applied to batches on ``device`` (validation never augments).
    augment: AugmentConfig = AugmentConfig()
    #: DataLoader worker processes for the streaming path (``FileSplit``); unused for in-memory arrays.
    num_workers: int = 0
    #: Epochs of linear probing (whole backbone frozen) before the model's freeze policy applies.
    lp_epochs: int = 0
    #: The first epoch trains on a stratified subset of this fraction of the train images (a cheaper first rung).
    first_epoch_fraction: float = 1.0
    #: Folder of the shared frozen-feature cache; ``None`` always runs the backbone (no boundary cache either).
    feature_cache: str | None = None
    #: Most bytes a frozen prefix's cached activations may take (``training.boundary_cache``); ``None``: a
    #: quarter of the device's free memory. Above it every block runs each batch.
    boundary_cache_bytes: int | None = None
    #: Learning-rate schedule over ``epochs`` and warmup (default: cosine to zero, no warmup).
    schedule: ScheduleConfig = ScheduleConfig()
    #: Label smoothing, MixUp/CutMix and L2-SP (default: all off).
    regularise: RegulariseConfig = RegulariseConfig()
    #: Classes, for MixUp/CutMix's soft targets; ``None`` = the largest training label + 1.
    num_classes: int | None = None
    #: This worker's part of a data-parallel group (``tune_tl.training.distributed.Shard``); ``None``: one worker.
    shard: Any = None


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch produced; field names are the Parquet ``epochs`` columns."""

    epoch: int
    train_loss: float
    val_loss: float
    val_acc: float
    #: The base learning rate the epoch used (mean over its batches: schedule × warmup); named so it cannot
    #: collide with the config's peak ``lr`` (the trials table's column).
    scheduled_lr: float
    epoch_seconds: float
    trainable_params: int
    diverged: bool = False
    phase: str = "finetune"  # "probe" (head only, LP→FT's first phase) or "finetune"
    cached_features: bool = False  # the head trained on cached frozen-backbone features
    #: Leading backbone blocks served from a cache, not run: 0, k (a frozen prefix's activations), or all (pooled features).
    cached_blocks: int = 0


#: ``on_state(metrics, state)``: called after every epoch with everything needed to resume (see ``fit``).
StateCallback = Callable[[EpochMetrics, dict[str, Any]], None]


def fit(
    model: nn.Module,
    split: Split | FileSplit,
    cfg: FitConfig,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    param_groups: list[dict] | None = None,
    resume: dict[str, Any] | None = None,
    on_state: StateCallback | None = None,
) -> list[EpochMetrics]:
    """Train ``model`` for ``cfg.epochs`` epochs on ``split``; stop early if the loss diverges.

    Only parameters with ``requires_grad`` get gradients (freezing is the model's business).
    The learning rate follows ``cfg.schedule`` over ``cfg.epochs`` from ``cfg.lr`` (by default a
    per-epoch cosine towards zero), times each parameter group's ``lr_scale`` (see
    ``tune_tl.models.param_groups``). ``split`` is in-memory arrays or, on the streaming path, file
    lists decoded per epoch; both visit the same images in the same order for the same seed.

    Args:
        model: Any module; LP→FT (``cfg.lp_epochs > 0``) and the caches need a ``TransferModel``.
        param_groups: Optimizer groups (``params`` plus optional ``lr_scale``); by default one group
            of the parameters that require gradients now.
        resume: A state from ``on_state``: training continues at the next epoch exactly where the
            saved run would have gone on (same LR schedule position, same batch order), which is
            how a killed trial is retried.
        on_state: Receives, after every epoch, the state dict of ``training.state.training_state`` (with the epoch's
            val probabilities).
    """
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device, memory_format=memory_format(device))
    if cfg.lp_epochs and not hasattr(model, "set_probing"):
        raise ValueError("lp_epochs > 0 needs a TransferModel (it must be able to freeze its backbone)")
    if param_groups is None:
        param_groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = make_optimizer(param_groups, cfg)
    for group in optimizer.param_groups:  # the schedulers scale each group's initial rate
        group["lr"] = cfg.lr * group.get("lr_scale", 1.0)
    schedule = LRSchedule(optimizer, cfg.schedule, cfg.epochs, len(epoch_batches(np.arange(len(split.train_y)), cfg.batch_size)))
    mixer = batch_mixer(cfg.regularise, cfg.num_classes or int(np.max(split.train_y)) + 1)
    l2sp = l2sp_penalty(model, cfg.regularise.l2sp)  # anchored at the weights fit starts from (pretrained)
    if cfg.shard is not None:
        cfg.shard.average_gradients(model)
    autocast, scaler = amp(device)
    normalise = Normaliser(cfg.mean, cfg.std, device)
    rng = np.random.default_rng(cfg.seed)
    augment = Augment(cfg.augment, cfg.seed)
    resident = resident_split(split, device)  # {} unless the uint8 arrays fit on the GPU
    inputs = EpochInputs(model, split, cfg, normalise, augment, mixer, resident)
    history: list[EpochMetrics] = []
    first = 0
    if resume is not None:
        first = load_training_state(resume, model, optimizer, scaler, rng, augment, schedule)
        history = [EpochMetrics(**m) for m in resume["history"]]

    for epoch in range(first, cfg.epochs):
        start = time.perf_counter()
        phase = "probe" if epoch < cfg.lp_epochs else "finetune"
        if cfg.lp_epochs:
            model.set_probing(phase == "probe")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        inputs.start_epoch()  # images, pooled features or a frozen prefix's activations, and what runs on them
        model.train()
        total_loss, seen, lrs = 0.0, 0, []
        pool = first_epoch_subset(split.train_y, cfg.first_epoch_fraction, cfg.seed) if epoch == 0 else np.arange(len(split.train_y))
        indices = epoch_batches(pool[rng.permutation(len(pool))], cfg.batch_size)
        if cfg.shard is not None:  # every worker draws the same global batches and trains on its slice
            indices = cfg.shard.local(indices)
        for item in inputs.load(indices):
            with autocast:
                x, y = inputs.batch(item)
                logits = inputs.module(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.regularise.label_smoothing)
            penalty = l2sp() if l2sp is not None else None
            objective = loss if penalty is None else loss.float() + penalty  # train_loss stays the data loss
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(objective).backward()
            lrs.append(base_lr(optimizer))
            scaler.step(optimizer)
            scaler.update()
            schedule.after_batch()
            total_loss += loss.item() * len(y)
            seen += len(y)
        lr = _epoch_lr(lrs or [base_lr(optimizer)])
        schedule.after_epoch()
        train_loss = total_loss / max(seen, 1) if cfg.shard is None else cfg.shard.mean_loss(total_loss, seen)
        diverged = is_diverged(train_loss, history[0].train_loss if history else math.log(max(2, int(split.train_y.max()) + 1)))
        evaluation = inputs.evaluate()
        seconds = time.perf_counter() - start
        metrics = EpochMetrics(epoch + 1, train_loss, evaluation.loss, evaluation.acc, lr, seconds, trainable, diverged, phase,
                               inputs.pooled, inputs.cached_blocks)
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
        if on_state is not None:
            on_state(metrics, training_state(epoch + 1, model, optimizer, scaler, rng, augment, history, schedule, evaluation.probs))
        if diverged:  # a NaN never recovers; stop rather than waste the budget
            break
    return history


def first_epoch_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of the train images the first epoch sees: all of them, or a stratified ``fraction`` (each class keeps
    that share of its images, at least one), the same for every trial of a seed so their first rungs compare."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, 1])  # a stream of its own: the same subset for every trial of the seed
    keep = [rng.choice(members, max(1, round(fraction * len(members))), replace=False)
            for members in (np.flatnonzero(labels == c) for c in np.unique(labels))]
    return np.sort(np.concatenate(keep))


def _epoch_lr(lrs: list[float]) -> float:
    """The rate an epoch used: its batches' mean, exactly the scheduled value when it did not change."""
    return lrs[0] if min(lrs) == max(lrs) else math.fsum(lrs) / len(lrs)


#: A training loss this many times the first epoch's counts as diverged (as a non-finite one does).
DIVERGENCE_FACTOR = 100.0


def is_diverged(train_loss: float, first_loss: float | None) -> bool:
    """Non-finite, or a finite blow-up: ``DIVERGENCE_FACTOR`` × the first epoch's loss (say 2.5e6 after 2.3).

    Relative, so it fits any number of classes; the first epoch's loss is the yardstick because a
    fresh head starts near ln(classes) and fine-tuning only lowers it unless the step size is too
    large. ``fit`` passes ln(classes) as the yardstick of the first epoch itself.
    """
    if not math.isfinite(train_loss):
        return True
    return first_loss is not None and math.isfinite(first_loss) and first_loss > 0 and train_loss > DIVERGENCE_FACTOR * first_loss


def make_optimizer(params: list, cfg: FitConfig) -> torch.optim.Optimizer:
    """AdamW, Adam (L2 weight decay in the gradient) or SGD over ``params`` (tensors or parameter-group dicts)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        # torch refuses Nesterov without momentum; momentum 0 is plain SGD either way.
        nesterov = cfg.nesterov and bool(cfg.momentum)
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum or 0.0, weight_decay=cfg.weight_decay, nesterov=nesterov)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
