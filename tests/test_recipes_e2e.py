"""A real tiny search with every recipe on (Adam, StepLR, warmup, smoothing, mixup, TrivialAugment, L2-SP)."""

import pandas as pd
import pytest
from spaces import write_tiny_space

from tune_tl.cli import main

EVERY_RECIPE = {"freeze_blocks": 7, "optimizer": "adam", "lr": [1.0e-3, 3.0e-3], "schedule": "step", "step_size": 1, "gamma": 0.1,
                "warmup_epochs": 0.5, "label_smoothing": 0.1, "mixup_alpha": 0.2, "auto_augment": "trivialaugment", "l2sp": 0.01}


@pytest.mark.slow
def test_a_search_with_every_recipe_runs_to_the_end_and_records_the_step_schedule(ray_local, tmp_path, capsys):
    space = write_tiny_space(tmp_path, budget={"max_epochs": 3, "grace_period": 3}, params=EVERY_RECIPE)
    code = main(["search", str(space), "--no-probes", "--output", str(tmp_path / "out"), "--name", "r", "--concurrency", "2"])
    assert code == 0

    trials = pd.read_parquet(tmp_path / "out" / "r" / "trials")
    epochs = pd.read_parquet(tmp_path / "out" / "r" / "epochs").sort_values(["trial_id", "epoch"])
    assert len(trials) == 2 and (trials["status"] == "completed").all() and (trials["epochs_run"] == 3).all()
    row = trials.iloc[0]
    assert (row["optimizer"], row["schedule"], row["step_size"], row["gamma"], row["auto_augment"]) == (
        "adam", "step", 1, 0.1, "trivialaugment")
    assert (row["warmup_epochs"], row["label_smoothing"], row["mixup_alpha"], row["l2sp"]) == (0.5, 0.1, 0.2, 0.01)
    assert trials["milestones"].isna().all() and trials["nesterov"].isna().all()  # conditionals that do not apply

    for trial_id, rows in epochs.groupby("trial_id"):
        lr = trials.set_index("trial_id").loc[trial_id, "lr"]
        recorded = rows["scheduled_lr"].tolist()
        assert recorded[0] < lr  # half the first epoch warms up
        assert recorded[1:] == pytest.approx([lr * 0.1, lr * 0.01], rel=1e-9)  # StepLR(1, 0.1), per epoch
    assert not epochs["cached_features"].any()
    assert (epochs["val_acc"] > 0.3).all()

    out = capsys.readouterr().out
    assert "Feature cache: not used by 2 trial(s)" in out
