"""``fit`` can stop after any epoch and continue from its saved state exactly where it left off."""

import io

import numpy as np
import torch
from torch import nn

from tune_tl.data.types import Split
from tune_tl.training.loop import FitConfig, fit


def tiny_split(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(60, 3, 8, 8), dtype=np.uint8)
    y = (x[:, 0].mean(axis=(1, 2)) > 127).astype(np.int64)
    return Split(x[:40], y[:40], x[40:], y[40:])


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))


def roundtrip(state):
    """What a checkpoint goes through: torch.save, then a weights-only load."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_a_run_resumed_from_any_epoch_state_matches_the_uninterrupted_run():
    cfg = FitConfig(epochs=4, batch_size=8, optimizer="sgd", lr=0.05)
    states = []
    full = fit(tiny_model(), tiny_split(), cfg, on_state=lambda m, s: states.append(roundtrip(s)))
    assert [s["epoch"] for s in states] == [1, 2, 3, 4]

    torch.manual_seed(123)  # the resumed process starts with other RNG states; the checkpoint restores them
    resumed = []
    history = fit(tiny_model(), tiny_split(), cfg, on_epoch=resumed.append, resume=states[1])
    assert [m.epoch for m in resumed] == [3, 4], "continues at the next epoch, not epoch 1"
    assert [m.epoch for m in history] == [1, 2, 3, 4]
    for a, b in zip(full[2:], resumed, strict=False):
        assert a.train_loss == b.train_loss and a.val_loss == b.val_loss and a.scheduled_lr == b.scheduled_lr


def test_a_state_of_the_last_epoch_resumes_to_nothing_left_to_do():
    cfg = FitConfig(epochs=2, batch_size=8)
    states = []
    fit(tiny_model(), tiny_split(), cfg, on_state=lambda m, s: states.append(roundtrip(s)))
    seen = []
    history = fit(tiny_model(), tiny_split(), cfg, on_epoch=seen.append, resume=states[-1])
    assert seen == [] and len(history) == 2
