"""The fine-tuning loop: plain PyTorch, no Ray, readable top to bottom.

``fit`` trains a model on in-memory uint8 arrays and calls ``on_epoch`` after every epoch; Ray Tune
wraps it in ``trainable.py``, and a user can call it directly:

    >>> metrics = fit(model, split, FitConfig(epochs=2, batch_size=64, lr=1e-3), print)
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tune_tl.data.augment import Augment, AugmentConfig
from tune_tl.data.types import FileSplit, Split

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
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 256
    #: Training-time augmentation, applied to batches on ``device`` (validation never augments).
    augment: AugmentConfig = AugmentConfig()
    #: DataLoader worker processes for the streaming path (``FileSplit``); unused for in-memory arrays.
    num_workers: int = 0


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch produced; field names are the Parquet ``epochs`` columns."""

    epoch: int
    train_loss: float
    val_loss: float
    val_acc: float
    lr: float
    epoch_seconds: float
    trainable_params: int
    diverged: bool = False


def fit(model: nn.Module, split: Split | FileSplit, cfg: FitConfig, on_epoch: Callable[[EpochMetrics], None] | None = None) -> list[EpochMetrics]:
    """Train ``model`` for ``cfg.epochs`` epochs on ``split``; stop early if the loss diverges.

    Only parameters with ``requires_grad`` are optimised (freezing is the model's business).
    The learning rate follows a per-epoch cosine schedule from ``cfg.lr`` towards zero. ``split``
    is in-memory arrays or, on the streaming path, file lists decoded per epoch; both visit the
    same images in the same order for the same seed.
    """
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    optimizer = make_optimizer(params, cfg)
    autocast, scaler = _amp(device)
    mean = torch.tensor(cfg.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg.std, device=device).view(1, 3, 1, 1) * 255
    rng = np.random.default_rng(cfg.seed)
    augment = Augment(cfg.augment, cfg.seed)
    history = []

    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        total_loss, seen = 0.0, 0
        order = rng.permutation(len(split.train_y))
        # BatchNorm cannot train on a single image, so a last batch of one is dropped.
        batches = [np.sort(b) for b in np.array_split(order, max(1, math.ceil(len(order) / cfg.batch_size))) if len(b) >= 2]
        for images, labels in _batches(split, "train", batches, cfg):
            x, y = _to_device(images, labels, device, mean, std, augment)
            with autocast:
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += loss.item() * len(y)
            seen += len(y)
        train_loss = total_loss / max(seen, 1)
        diverged = not math.isfinite(train_loss)
        val_loss, val_acc = evaluate_split(model, split, cfg, mean, std)
        metrics = EpochMetrics(epoch + 1, train_loss, val_loss, val_acc, lr, time.perf_counter() - start, trainable, diverged)
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
        if diverged:  # a NaN never recovers; stop rather than waste the budget
            break
    return history


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, cfg: FitConfig, mean=None, std=None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on uint8 ``images``."""
    return evaluate_split(model, Split(images[:0], labels[:0], images, labels), cfg, mean, std)


@torch.no_grad()
def evaluate_split(model: nn.Module, split: Split | FileSplit, cfg: FitConfig, mean=None, std=None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split``'s validation images (never augmented)."""
    device = torch.device(cfg.device)
    if mean is None:
        mean = torch.tensor(cfg.mean, device=device).view(1, 3, 1, 1) * 255
        std = torch.tensor(cfg.std, device=device).view(1, 3, 1, 1) * 255
    model.eval()
    loss_sum, correct = 0.0, 0
    labels = split.val_y
    batches = [np.arange(s, min(s + cfg.eval_batch_size, len(labels))) for s in range(0, len(labels), cfg.eval_batch_size)]
    for images, batch_labels in _batches(split, "val", batches, cfg):
        x, y = _to_device(images, batch_labels, device, mean, std)
        logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    n = max(len(labels), 1)
    return loss_sum / n, correct / n


def make_optimizer(params: list[nn.Parameter], cfg: FitConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum or 0.0, weight_decay=cfg.weight_decay, nesterov=bool(cfg.momentum))
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def _batches(split: Split | FileSplit, part: str, batches: list[np.ndarray], cfg: FitConfig):
    """uint8 image and label tensors for each batch of indices into ``split``'s ``part``."""
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
    x = images.to(device, non_blocking=True).float()
    if augment is not None:
        x = augment(x)
    return (x - mean) / std, labels.to(device, non_blocking=True)


def _amp(device: torch.device):
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling); none on CPU."""
    if device.type != "cuda":
        return nullcontext(), torch.amp.GradScaler("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype), torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
