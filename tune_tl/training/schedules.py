"""Learning-rate schedules: torch's own schedulers over the one epoch budget, plus a linear warmup.

The main schedule (``cosine``, ``step``, ``multistep``, ``constant``) is stepped once per epoch, as
those schedulers are written; its length is always ``max_epochs``, also under ASHA, so a trial's
learning rates never depend on when it is stopped. The warmup is ``LinearLR`` stepped per batch (a
fractional ``warmup_epochs`` is a number of batches). Both act on the same optimizer: torch's
schedulers chain multiplicatively, so during warmup the rate is ``warmup factor × schedule``.
Each parameter group keeps its own scale (``lr_scale``), because the schedulers scale every
group's initial rate.

Example:
    >>> schedule = LRSchedule(optimizer, ScheduleConfig("step", step_size=1, gamma=0.1), epochs=4, steps_per_epoch=10)
    >>> # per batch: optimizer.step(); schedule.after_batch()   per epoch: schedule.after_epoch()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import lr_scheduler


@dataclass(frozen=True)
class ScheduleConfig:
    """Which schedule, with its settings; the defaults are the cosine schedule without warmup."""

    name: str = "cosine"  #: cosine | step | multistep | constant
    step_size: int = 1  #: step: epochs between decays
    gamma: float = 0.1  #: step, multistep: factor at each decay
    milestones: tuple[float, ...] = (0.5, 0.75)  #: multistep: fractions of the epoch budget
    warmup_epochs: float = 0.0  #: linear warmup length (may be fractional)


def main_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int) -> lr_scheduler.LRScheduler:
    """The per-epoch scheduler over ``epochs``; cosine anneals to zero as the loop always did."""
    if cfg.name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if cfg.name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.name == "multistep":
        return lr_scheduler.MultiStepLR(optimizer, milestone_epochs(cfg.milestones, epochs), gamma=cfg.gamma)
    if cfg.name == "constant":
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ValueError(f"unknown schedule {cfg.name!r}")


def milestone_epochs(fractions: tuple[float, ...], epochs: int) -> list[int]:
    """Fractions of the budget → the epochs (1..epochs-1) from which the rate is decayed."""
    return sorted({min(max(1, round(f * epochs)), max(1, epochs - 1)) for f in fractions})


def warmup_steps(warmup_epochs: float, steps_per_epoch: int) -> int:
    return max(0, round(warmup_epochs * steps_per_epoch))


class LRSchedule:
    """The trial's schedule: ``after_batch`` after every optimizer step, ``after_epoch`` after every epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int):
        self.main = main_scheduler(optimizer, cfg, epochs)
        n = warmup_steps(cfg.warmup_epochs, steps_per_epoch)
        # From 1/(n+1) of the rate at the first batch up to the full rate after n batches.
        self.warmup = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (n + 1), total_iters=n) if n else None

    def after_batch(self) -> None:
        if self.warmup is not None and self.warmup.last_epoch < self.warmup.total_iters:
            self.warmup.step()

    def after_epoch(self) -> None:
        self.main.step()

    def state_dict(self) -> dict[str, Any]:
        """Plain ints, floats and lists: loadable with ``torch.load(weights_only=True)``."""
        return {"main": self.main.state_dict(), "warmup": self.warmup.state_dict() if self.warmup else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.main.load_state_dict(state["main"])
        if self.warmup is not None and state.get("warmup") is not None:
            self.warmup.load_state_dict(state["warmup"])


def base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The rate in force for a group of scale 1 (what the epochs table records as ``lr``)."""
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_scale", 1.0)
