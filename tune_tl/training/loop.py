"""The fine-tuning loop: plain PyTorch, no Ray, readable top to bottom.

``fit`` trains a model on in-memory uint8 arrays and calls ``on_epoch`` after every epoch; Ray Tune
wraps it in ``trainable.py``, and a user can call it directly. With ``lp_epochs > 0`` the first epochs are
a linear probe (head only) and the model's freeze policy applies afterwards; epochs count across both
phases and each epoch's row says its ``phase``. Epochs whose backbone is entirely frozen and whose inputs
are not augmented train the head on cached backbone features (``tune_tl.training.feature_cache``) when
``FitConfig.feature_cache`` names a folder: same result, a fraction of the time. On CUDA the model and
batches are ``channels_last`` and in-memory data sits on the GPU when it fits (``tune_tl.training.device``).
The learning-rate schedule and warmup live in ``tune_tl.training.schedules``; label smoothing, MixUp/CutMix
and L2-SP in ``tune_tl.training.regularisers``.

    >>> metrics = fit(model, split, FitConfig(epochs=2, batch_size=64, lr=1e-3), print)
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tune_tl.data.augment import Augment, AugmentConfig
from tune_tl.data.types import FileSplit, Split
from tune_tl.training.device import memory_format, resident_split
from tune_tl.training.regularisers import RegulariseConfig, batch_mixer, l2sp_penalty
from tune_tl.training.schedules import LRSchedule, ScheduleConfig, base_lr

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    #: Folder of the shared frozen-feature cache; ``None`` always runs the backbone.
    feature_cache: str | None = None
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
    ``tune_tl.models.param_groups``). ``split`` is in-memory
    arrays or, on the streaming path, file lists decoded per epoch; both visit the same images in
    the same order for the same seed.

    Args:
        model: Any module; LP→FT (``cfg.lp_epochs > 0``) and the feature cache need a
            ``TransferModel`` (``set_probing``, ``backbone_frozen``, ``features``, ``head``).
        param_groups: Optimizer groups (``params`` plus optional ``lr_scale``); by default one group
            of the parameters that require gradients now.
        resume: A state from ``on_state``: training continues at the next epoch exactly where the
            saved run would have gone on (same LR schedule position, same batch order), which is
            how a killed trial is retried.
        on_state: Receives, after every epoch, a state dict (model, optimizer, LR schedule, AMP scaler,
            torch, numpy and augmentation RNG states, epoch, history) made only of tensors and plain
            Python values, so ``torch.load(weights_only=True)`` reads it back.
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
    schedule = LRSchedule(optimizer, cfg.schedule, cfg.epochs, len(_epoch_batches(np.arange(len(split.train_y)), cfg.batch_size)))
    mixer = batch_mixer(cfg.regularise, cfg.num_classes or int(np.max(split.train_y)) + 1)
    l2sp = l2sp_penalty(model, cfg.regularise.l2sp)  # anchored at the weights fit starts from (pretrained)
    if cfg.shard is not None:
        cfg.shard.average_gradients(model)
    autocast, scaler = _amp(device)
    mean = torch.tensor(cfg.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg.std, device=device).view(1, 3, 1, 1) * 255
    rng = np.random.default_rng(cfg.seed)
    augment = Augment(cfg.augment, cfg.seed)
    resident = resident_split(split, device)  # {} unless the uint8 arrays fit on the GPU
    cached = None  # (train features, val features) while the whole backbone stays frozen
    history: list[EpochMetrics] = []
    first = 0
    if resume is not None:
        first = _load_state(resume, model, optimizer, scaler, rng, augment, schedule)
        history = [EpochMetrics(**m) for m in resume["history"]]

    for epoch in range(first, cfg.epochs):
        start = time.perf_counter()
        phase = "probe" if epoch < cfg.lp_epochs else "finetune"
        if cfg.lp_epochs:
            model.set_probing(phase == "probe")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if epoch == first:
            _log_cache_blocked(model, cfg)
        if cfg.feature_cache is None or isinstance(split, FileSplit) or not features_cacheable(model, cfg):
            cached = None
        elif cached is None:
            cached = _frozen_features(model, split, cfg, mean, std, resident)
        model.train()
        total_loss, seen, lrs = 0.0, 0, []
        batches = _epoch_batches(rng.permutation(len(split.train_y)), cfg.batch_size)
        if cfg.shard is not None:  # every worker draws the same global batches and trains on its slice
            batches = cfg.shard.local(batches)
        loaded = _batches(split, "train", batches, cfg, resident) if cached is None else ((None, None) for _ in batches)
        for batch, (images, labels) in zip(batches, loaded):
            with autocast:
                if cached is None:
                    x, y = _to_device(images, labels, device, mean, std, augment)
                    if mixer is not None:
                        x, y = mixer(x, y)  # y becomes soft targets, which cross_entropy accepts
                    logits = model(x)
                else:
                    x, y = cached[0][batch], torch.from_numpy(split.train_y[batch]).to(device)
                    logits = model.head(x)
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
        if cached is None:
            val_loss, val_acc = evaluate_split(model, split, cfg, mean, std, resident)
        else:
            val_loss, val_acc = _evaluate_head(model.head, cached[1], split.val_y, cfg)
        seconds = time.perf_counter() - start
        metrics = EpochMetrics(epoch + 1, train_loss, val_loss, val_acc, lr, seconds, trainable, diverged, phase, cached is not None)
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
        if on_state is not None:
            on_state(metrics, _state(epoch + 1, model, optimizer, scaler, rng, augment, history, schedule))
        if diverged:  # a NaN never recovers; stop rather than waste the budget
            break
    return history


def _epoch_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """One epoch's training batches (sorted indices) from a permutation of the training set."""
    # BatchNorm cannot train on a single image, so a last batch of one is dropped.
    return [np.sort(b) for b in np.array_split(order, max(1, math.ceil(len(order) / batch_size))) if len(b) >= 2]


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


def has_input_augmentation(cfg: FitConfig) -> bool:
    """Whether training inputs are randomly transformed or mixed (then backbone outputs differ every epoch)."""
    return cfg.augment.active or cfg.regularise.mixes


def cache_blockers(cfg: FitConfig) -> list[str]:
    """The parameters that make this trial's inputs differ every epoch, so frozen features cannot be cached."""
    a, r = cfg.augment, cfg.regularise
    named = {"aug_crop_scale": a.crop_scale < 1.0, "aug_flip": a.flip, "aug_rotate": a.rotate > 0, "aug_jitter": a.jitter > 0,
             "auto_augment": a.auto_augment != "none", "mixup_alpha": r.mixup_alpha > 0, "cutmix_alpha": r.cutmix_alpha > 0}
    return [name for name, on in named.items() if on]


def _log_cache_blocked(model: nn.Module, cfg: FitConfig) -> None:
    """Say why a frozen backbone runs every epoch although the feature cache is on."""
    if cfg.feature_cache is not None and getattr(model, "backbone_frozen", False) and has_input_augmentation(cfg):
        log.info("feature cache off for this trial: the backbone is frozen but the inputs change every epoch (%s)",
                 ", ".join(cache_blockers(cfg)))


def features_cacheable(model: nn.Module, cfg: FitConfig) -> bool:
    """Whether this epoch's backbone output is a fixed function of each image, so it can be cached.

    True when the whole backbone is frozen (so it runs in eval mode: no BatchNorm updates, no dropout)
    and the inputs are not augmented.
    """
    return bool(getattr(model, "backbone_frozen", False)) and not has_input_augmentation(cfg)


def _frozen_features(model: nn.Module, split: Split, cfg: FitConfig, mean, std, resident) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled backbone features of every train and val image, from the shared cache or computed once."""
    from tune_tl.training.feature_cache import FeatureCache, fingerprint_arrays, fingerprint_module, make_key

    device = mean.device
    key = make_key(
        backbone=getattr(getattr(model, "backbone", None), "name", type(model.features).__name__),
        weights=fingerprint_module(model.features),
        mean=list(cfg.mean), std=list(cfg.std),
        resolution=split.resolution,
        cut="pooled",  # after every block: the cut point
        data=fingerprint_arrays(split.train_x, split.train_y, split.val_x, split.val_y),
        device=device.type,  # GPU (AMP) and CPU features differ in the last bits
    )

    def compute() -> dict[str, np.ndarray]:
        return {part: _encode(model.features, split, part, cfg, mean, std, resident) for part in ("train", "val")}

    arrays = FeatureCache(cfg.feature_cache).load_or_compute(key, compute, {"train": len(split.train_y), "val": len(split.val_y)})
    return torch.from_numpy(arrays["train"]).to(device), torch.from_numpy(arrays["val"]).to(device)


@torch.no_grad()
def _encode(features: nn.Module, split: Split, part: str, cfg: FitConfig, mean, std, resident) -> np.ndarray:
    features.eval()  # fit calls model.train() afterwards, which keeps a frozen backbone in eval
    autocast, _ = _amp(mean.device)
    out = []
    for images, labels in _batches(split, part, _in_order(len(getattr(split, f"{part}_y")), cfg), cfg, resident):
        x, _ = _to_device(images, labels, mean.device, mean, std)
        with autocast:
            out.append(features(x).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def _evaluate_head(head: nn.Module, features: torch.Tensor, labels: np.ndarray, cfg: FitConfig) -> tuple[float, float]:
    head.eval()
    y = torch.tensor(labels, device=features.device)  # a copy: Ray's arrays are read-only, from_numpy would warn
    loss_sum, correct = 0.0, 0
    for start in range(0, len(labels), cfg.eval_batch_size):
        logits = head(features[start : start + cfg.eval_batch_size]).float()
        target = y[start : start + cfg.eval_batch_size]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    n = max(len(labels), 1)
    return loss_sum / n, correct / n
def _state(epoch: int, model, optimizer, scaler, rng: np.random.Generator, augment: Augment, history: list[EpochMetrics],
           schedule: LRSchedule) -> dict[str, Any]:
    return {
        "epoch": epoch,  # epochs completed; training resumes at this 0-based index
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": rng.bit_generator.state,
        "augment_rng": augment.gen.get_state(),
        "history": [asdict(m) for m in history],
    }


def _load_state(state: dict[str, Any], model, optimizer, scaler, rng: np.random.Generator, augment: Augment, schedule: LRSchedule) -> int:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("schedule") is not None:
        schedule.load_state_dict(state["schedule"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    rng.bit_generator.state = state["numpy_rng"]
    if state.get("augment_rng") is not None:
        augment.gen.set_state(state["augment_rng"])
    return int(state["epoch"])


@torch.no_grad()
def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, cfg: FitConfig, mean=None, std=None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on uint8 ``images``."""
    return evaluate_split(model, Split(images[:0], labels[:0], images, labels), cfg, mean, std)


@torch.no_grad()
def evaluate_split(model: nn.Module, split: Split | FileSplit, cfg: FitConfig, mean=None, std=None, resident=None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split``'s validation images (never augmented).

    ``resident`` is ``fit``'s ``resident_split``; ``None`` decides here whether the val images go to the GPU.
    """
    device = torch.device(cfg.device)
    if resident is None:
        resident = resident_split(split, device, ("val",))
    if mean is None:
        mean = torch.tensor(cfg.mean, device=device).view(1, 3, 1, 1) * 255
        std = torch.tensor(cfg.std, device=device).view(1, 3, 1, 1) * 255
    model.eval()
    loss_sum, correct = 0.0, 0
    labels = split.val_y
    for images, batch_labels in _batches(split, "val", _in_order(len(labels), cfg), cfg, resident):
        x, y = _to_device(images, batch_labels, device, mean, std)
        logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    n = max(len(labels), 1)
    return loss_sum / n, correct / n


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


def _in_order(n: int, cfg: FitConfig) -> list[np.ndarray]:
    """Evaluation batches: indices 0..n-1 in order, ``eval_batch_size`` at a time."""
    return [np.arange(s, min(s + cfg.eval_batch_size, n)) for s in range(0, n, cfg.eval_batch_size)]


def _batches(split: Split | FileSplit, part: str, batches: list[np.ndarray], cfg: FitConfig, resident=None):
    """uint8 image and label tensors for each batch of indices into ``split``'s ``part``.

    From the device copy when ``resident`` (see ``resident_split``) holds ``part``: same indices, same batches.
    """
    if resident and part in resident:
        images, labels = resident[part]
        for idx in batches:
            on_device = torch.from_numpy(idx).to(images.device)
            yield images[on_device], labels[on_device]
        return
    if isinstance(split, FileSplit):
        from tune_tl.data.streaming import file_batches

        files, labels = getattr(split, f"{part}_files"), getattr(split, f"{part}_y")
        yield from file_batches(files, labels, split.resolution, batches, cfg.num_workers)
        return
    images, labels = getattr(split, f"{part}_x"), getattr(split, f"{part}_y")
    for idx in batches:
        # Fancy indexing copies, so read-only arrays from Ray's object store are fine here.
        yield torch.from_numpy(images[idx]), torch.from_numpy(labels[idx])


def _to_device(images: torch.Tensor, labels: torch.Tensor, device, mean, std, augment: Augment | None = None):
    x = images.to(device, non_blocking=True)
    if augment is not None:
        x = augment.policy(x)  # RandAugment / TrivialAugment on uint8, before the float augmentations
    x = x.float()
    if augment is not None:
        x = augment(x)
    x = ((x - mean) / std).contiguous(memory_format=memory_format(device))
    return x, labels.to(device, non_blocking=True)


def _amp(device: torch.device):
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling); none on CPU."""
    if device.type != "cuda":
        return nullcontext(), torch.amp.GradScaler("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype), torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
