"""Tests that really kill processes: a SIGKILLed trial worker is retried from its last epoch, a NaN ends a trial as
``diverged`` and a (simulated) CUDA OOM as ``oom``. (A SIGKILLed driver: ``test_kill_anywhere_e2e.py``.)

Each search runs in its own process (``python -m tune_tl.cli``) with its own Ray; see ``faults.Driver``.
"""

import os
import signal
from pathlib import Path

import pandas as pd
import pytest
from faults import Driver, assert_every_file_readable, assert_one_row_per_trial_and_epoch

pytestmark = pytest.mark.processes

# Trial 0 gets an absurd learning rate (its loss turns NaN); trial 1 a sane one. On the tests' tiny backbone
# (tests/tiny_backbone.py, nine blocks as Lite0): what a fault does to a trial does not depend on the backbone.
FAULT_SPACE = '''
SETTINGS = {"seed": 0, "resolutions": [32], "backbone": {"name": "tiny_test_cnn", "weights": "imagenet"},
            "budget": {"samples": 2, "max_epochs": 3, "grace_period": 3, "reduction_factor": 2}}

def space(trial):
    trial.suggest_categorical("head", ["linear"])
    return {"resolution": 32, "batch_size": 128, "freeze_blocks": 9, "optimizer": "sgd",
            "lr": 1.0e8 if trial.number == 0 else 3.0e-3}
'''


def started_trials(trace: Path) -> list[str]:
    """Trial ids in the order their first epoch started (``starts.log``, written by ``tests/fault_injection``)."""
    lines = (trace / "starts.log").read_text().split("\n") if (trace / "starts.log").exists() else []
    return list(dict.fromkeys(line.split()[0] for line in lines if line.strip()))


@pytest.fixture(scope="module")
def fault_search(tmp_path_factory):
    """One search: trial 0 diverges; trial 1's worker is SIGKILLed in the middle of epoch 2, as Ray's memory monitor
    would, then it hits a simulated OOM at epoch 3. The hooks are the tests' (``tests/fault_injection``)."""
    tmp = tmp_path_factory.mktemp("faults")
    (tmp / "space.py").write_text(FAULT_SPACE)
    trace = tmp / "trace"
    root = tmp / "out" / "f"
    driver = Driver(["search", str(tmp / "space.py"), "--no-probes", "--output", str(tmp / "out"), "--name", "f", "--concurrency", "1",
                     "--max-failures", "2", "--no-feature-cache"], tmp / "search.log", {"TUNE_TL_FAULT_OOM_AT_EPOCH": "3"},
                    fault_dir=trace, at="mid_epoch")
    try:
        marker = driver.wait_for_moment(timeout=300)  # trial 1's worker stops between training and validating epoch 2
        worker = int(marker.split()[2])
        trial_id = started_trials(trace)[1]
        assert int((trace / f"{trial_id}.pid").read_text()) == worker
        os.kill(worker, signal.SIGKILL)
        code = driver.wait(timeout=300)
    finally:
        driver.kill()
    assert code == 0, driver.tail()
    starts = [line.split() for line in (trace / "starts.log").read_text().splitlines()]
    return root, trial_id, starts


@pytest.mark.slow
def test_a_killed_trial_worker_is_retried_from_its_last_epoch_without_duplicate_rows(fault_search):
    root, killed, starts = fault_search
    assert [int(e) for t, e in starts if t == killed] == [1, 2], "retried once, at the epoch after its checkpoint"
    trials, epochs = assert_one_row_per_trial_and_epoch(root)
    assert sorted(epochs.loc[epochs["trial_id"] == killed, "epoch"]) == [1, 2]
    assert_every_file_readable(root)


@pytest.mark.slow
def test_a_nan_loss_ends_the_trial_as_diverged_and_it_is_not_retried(fault_search):
    root, killed, starts = fault_search
    trials = pd.read_parquet(root / "trials").set_index("trial_id")
    (diverged,) = [t for t in trials.index if t != killed]
    assert trials.loc[diverged, "status"] == "diverged" and trials.loc[diverged, "epochs_run"] == 1
    assert "non-finite" in trials.loc[diverged, "error"]
    assert [t for t, _ in starts].count(diverged) == 1


@pytest.mark.slow
def test_a_cuda_out_of_memory_ends_the_trial_as_oom_with_its_message_and_the_search_goes_on(fault_search):
    root, killed, starts = fault_search
    trials = pd.read_parquet(root / "trials").set_index("trial_id")
    assert len(trials) == 2, "the search went on to its end"
    assert trials.loc[killed, "status"] == "oom" and trials.loc[killed, "epochs_run"] == 2
    assert "OutOfMemoryError" in trials.loc[killed, "error"] and "simulated" in trials.loc[killed, "error"]
    assert [t for t, _ in starts].count(killed) == 2, "not retried after the OOM"
