"""A real search whose trial trains with two data-parallel workers (gloo on CPU), end to end.

On the tests' registered tiny backbone: the workers are spawned processes that never registered it (nor could
import ``tests/tiny_backbone.py``), so its recipe must reach them with the job, as it reaches the trial."""

import pandas as pd
import pytest
from spaces import TINY_CNN, write_tiny_space

from tune_tl.cli import main


@pytest.mark.slow
def test_a_two_worker_trial_runs_in_a_real_search_and_its_rows_record_two_workers(ray_local, tmp_path):
    space = write_tiny_space(tmp_path, backbone=TINY_CNN, budget={"samples": 1},
                             params={"freeze_blocks": 8, "optimizer": "adamw", "lr": 1.0e-3, "head": "linear"})
    out = tmp_path / "out"
    assert main(["search", str(space), "--no-probes", "--workers-per-trial", "2", "--output", str(out), "--name", "ddp"]) == 0

    trials = pd.read_parquet(out / "ddp" / "trials")
    epochs = pd.read_parquet(out / "ddp" / "epochs")
    assert len(trials) == 1 and trials["status"].tolist() == ["completed"], trials["error"].tolist()
    assert trials["workers"].tolist() == [2] and epochs["workers"].tolist() == [2]
    assert epochs["val_acc"].between(0, 1).all() and epochs["train_loss"].notna().all()
    assert epochs["trainable_params"].iloc[0] > 0
    assert list((out / "ddp").glob("*/checkpoint_*/state.pt")), "worker 0's state is the trial's checkpoint"
