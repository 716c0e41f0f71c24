"""A real tiny search through Ray Tune, Optuna and ASHA, driven from the command line."""

import pandas as pd
import pytest
from spaces import TINY_CNN, write_tiny_space

from tune_tl.cli import main


@pytest.mark.slow
def test_cli_search_writes_one_row_per_trial_and_epoch_and_asha_stops_weak_trials(ray_local, tmp_path, capsys):
    space = write_tiny_space(tmp_path, backbone=TINY_CNN, budget={"samples": 6, "max_epochs": 3}, params={
        "freeze_blocks": {"low": 5, "high": "all"}, "optimizer": ["adamw", "sgd"],
        "lr": {"low": 1.0e-5, "high": 3.0e-2, "log": True}, "head": ["linear", "mlp"], "head_hidden": 64})
    # Epoch-rung ASHA (not the cost-aware default): on this tiny space it is sure to stop someone.
    code = main(["search", str(space), "--no-probes", "--output", str(tmp_path / "out"), "--name", "tiny", "--concurrency", "2",
                 "--scheduler", "asha"])
    assert code == 0

    root = tmp_path / "out" / "tiny"
    trials = pd.read_parquet(root / "trials")  # plain pandas, no tune_tl needed
    epochs = pd.read_parquet(root / "epochs")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "pruned"}
    assert (trials["status"] == "pruned").sum() >= 1, "ASHA stopped no trial early"
    assert (trials["status"] == "completed").sum() >= 1
    assert (trials.loc[trials["status"] == "completed", "epochs_run"] == 3).all()
    assert (trials.loc[trials["status"] == "pruned", "epochs_run"] < 3).all()

    # Exactly one row per (trial, epoch), epochs 1..epochs_run.
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    runs = epochs.groupby("trial_id")["epoch"].agg(["count", "max"])
    assert runs["count"].to_dict() == trials.set_index("trial_id")["epochs_run"].to_dict()
    assert (runs["count"] == runs["max"]).all()
    assert epochs["val_acc"].between(0, 1).all() and (epochs["trainable_params"] > 0).all()

    # Conditional parameters are null exactly where they do not apply.
    assert trials["momentum"].isna().eq(trials["optimizer"] != "sgd").all()
    assert trials["head_hidden"].isna().eq(trials["head"] != "mlp").all()
    assert trials["freeze_blocks"].between(5, 9).all()

    best = trials.sort_values("best_val_acc").iloc[-1]
    # The tiny backbone's seeded features: a linear head reaches about 35 % in one epoch (chance: 10 %).
    assert best["best_val_acc"] > 0.25, "a trained head beats chance clearly"
    out = capsys.readouterr().out
    assert f"Best trial {best['trial_id']}: val_acc {best['best_val_acc']:.4f}" in out
    assert "Search finished:" in out and str(root / "trials") in out
    assert (root / "search.json").is_file()
