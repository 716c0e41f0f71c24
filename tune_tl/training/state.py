"""A training run's full state after an epoch, and how to continue from it exactly.

Made only of tensors and plain Python values, so ``torch.load(weights_only=True)`` reads it back: a killed
trial is retried from its last checkpoint with the same LR-schedule position, batch order and RNG draws.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from tune_tl.data.augment import Augment
from tune_tl.store.search_run import VAL_PROBS
from tune_tl.training.schedules import LRSchedule


def training_state(epoch: int, model, optimizer, scaler, rng: np.random.Generator, augment: Augment, history: list,
                   schedule: LRSchedule, val_probs: np.ndarray | None = None) -> dict[str, Any]:
    """Everything needed to go on after ``epoch`` completed epochs (``history``: their ``EpochMetrics``), and the
    epoch's val probabilities (``val_probs``, ``(images, classes)``): read back by ``search.val_predictions``
    for the epochs retention keeps, instead of a forward pass over val per kept trial when the search ends."""
    return {
        **({} if val_probs is None else {VAL_PROBS: torch.from_numpy(np.ascontiguousarray(val_probs, np.float32))}),
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


def load_training_state(state: dict[str, Any], model, optimizer, scaler, rng: np.random.Generator, augment: Augment,
                        schedule: LRSchedule) -> int:
    """Put ``state`` back into the run's objects; return the epoch to continue at (0-based)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    rng.bit_generator.state = state["numpy_rng"]
    augment.gen.set_state(state["augment_rng"])
    return int(state["epoch"])
