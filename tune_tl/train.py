"""The fine-tuning loop: plain PyTorch, no Ray, readable top to bottom.

``fit`` trains a model on in-memory uint8 arrays and calls ``on_epoch`` after every epoch; Ray Tune
wraps it in ``trainable.py``, and a user can call it directly:

    >>> metrics = fit(model, split, FitConfig(epochs=2, batch_size=64, lr=1e-3), print)
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tune_tl.data.types import Split

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


#: ``on_state(metrics, state)``: called after every epoch with everything needed to resume (see ``fit``).
StateCallback = Callable[[EpochMetrics, dict[str, Any]], None]


def fit(
    model: nn.Module,
    split: Split,
    cfg: FitConfig,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    resume: dict[str, Any] | None = None,
    on_state: StateCallback | None = None,
) -> list[EpochMetrics]:
    """Train ``model`` for ``cfg.epochs`` epochs on ``split``; stop early if the loss diverges.

    Only parameters with ``requires_grad`` are optimised (freezing is the model's business).
    The learning rate follows a per-epoch cosine schedule from ``cfg.lr`` towards zero.

    ``on_state`` receives, after every epoch, a state dict (model, optimizer, AMP scaler, torch and
    numpy RNG states, epoch, history) made only of tensors and plain Python values, so it can be
    saved with ``torch.save`` and read back with ``torch.load(weights_only=True)``. Passing it back
    as ``resume`` continues at the next epoch exactly where the saved run would have gone on (same
    LR schedule position, same batch order), which is how a killed trial is retried.
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
    history: list[EpochMetrics] = []
    first = 0
    if resume is not None:
        first = _load_state(resume, model, optimizer, scaler, rng)
        history = [EpochMetrics(**m) for m in resume["history"]]

    for epoch in range(first, cfg.epochs):
        start = time.perf_counter()
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        total_loss, seen = 0.0, 0
        order = rng.permutation(len(split.train_y))
        for batch in np.array_split(order, max(1, math.ceil(len(order) / cfg.batch_size))):
            if len(batch) < 2:  # BatchNorm cannot train on a single image
                continue
            x, y = _batch(split.train_x, split.train_y, np.sort(batch), device, mean, std)
            with autocast:
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += loss.item() * len(batch)
            seen += len(batch)
        train_loss = total_loss / max(seen, 1)
        diverged = not math.isfinite(train_loss)
        val_loss, val_acc = evaluate(model, split.val_x, split.val_y, cfg, mean, std)
        metrics = EpochMetrics(epoch + 1, train_loss, val_loss, val_acc, lr, time.perf_counter() - start, trainable, diverged)
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
        if on_state is not None:
            on_state(metrics, _state(epoch + 1, model, optimizer, scaler, rng, history))
        if diverged:  # a NaN never recovers; stop rather than waste the budget
            break
    return history


def _state(epoch: int, model, optimizer, scaler, rng: np.random.Generator, history: list[EpochMetrics]) -> dict[str, Any]:
    return {
        "epoch": epoch,  # epochs completed; training resumes at this 0-based index
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": rng.bit_generator.state,
        "history": [asdict(m) for m in history],
    }


def _load_state(state: dict[str, Any], model, optimizer, scaler, rng: np.random.Generator) -> int:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    rng.bit_generator.state = state["numpy_rng"]
    return int(state["epoch"])


@torch.no_grad()
def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, cfg: FitConfig, mean=None, std=None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on uint8 ``images``."""
    device = torch.device(cfg.device)
    if mean is None:
        mean = torch.tensor(cfg.mean, device=device).view(1, 3, 1, 1) * 255
        std = torch.tensor(cfg.std, device=device).view(1, 3, 1, 1) * 255
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(labels), cfg.eval_batch_size):
        idx = np.arange(start, min(start + cfg.eval_batch_size, len(labels)))
        x, y = _batch(images, labels, idx, device, mean, std)
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


def _batch(images: np.ndarray, labels: np.ndarray, idx: np.ndarray, device, mean, std):
    # Fancy indexing copies, so read-only arrays from Ray's object store are fine here.
    x = torch.from_numpy(images[idx]).to(device, non_blocking=True).float()
    y = torch.from_numpy(labels[idx]).to(device, non_blocking=True)
    return (x - mean) / std, y


def _amp(device: torch.device):
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling); none on CPU."""
    if device.type != "cuda":
        return nullcontext(), torch.amp.GradScaler("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype), torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
