"""A synthetic search written through the real Parquet sink's hooks (no Ray): fast tables for analysis tests."""

import random
from types import SimpleNamespace


def write_synthetic(sink, n_trials: int, epochs: int) -> None:
    """``n_trials`` trials of ``epochs`` epochs each, seeded random accuracies, then the sink's end of experiment."""
    rng = random.Random(0)
    for i in range(n_trials):
        trial = SimpleNamespace(trial_id=f"t{i:06d}", config={"lr": 10 ** rng.uniform(-4, -1), "freeze_blocks": rng.randint(0, 9)},
                                error_file=None)
        sink.on_trial_start(0, [], trial)
        for e in range(1, epochs + 1):
            sink.on_trial_result(0, [], trial, {"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "val_acc": rng.random(),
                                                "scheduled_lr": 0.01, "epoch_seconds": 1.0, "trainable_params": 1000, "diverged": False})
        sink.on_trial_complete(0, [], trial)
    sink.on_experiment_end([])
