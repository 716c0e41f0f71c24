"""Tests that really kill processes: a SIGKILLed driver is resumed, a SIGKILLed trial worker is
retried from its last epoch, a NaN ends a trial as ``diverged`` and a (simulated) CUDA OOM as ``oom``.

Each search runs in its own process (``python -m tune_tl.cli``) with its own Ray; see ``faults.Driver``.
"""

import json
import os
import re
import signal
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from faults import Driver
from spaces import tiny_space

pytestmark = pytest.mark.processes

SPACE = tiny_space(budget={"samples": 3, "max_epochs": 2}, params={
    "freeze_blocks": "all", "lr": {"low": 1.0e-3, "high": 3.0e-2, "log": True}, "head": ["linear", "mlp"], "head_hidden": 32})

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


def trial_dirs(root: Path) -> list[Path]:
    """Ray's trial folders in the search folder (named by trial id: ``tune_tl.search.progress.trial_name``)."""
    return [d for d in root.glob("*") if d.is_dir() and re.fullmatch(r"[0-9a-f]{5,8}(_\d+)?", d.name)]


def started_trials(trace: Path) -> list[str]:
    """Trial ids in the order their first epoch started (``starts.log``, written by ``tests/fault_injection``)."""
    lines = (trace / "starts.log").read_text().split("\n") if (trace / "starts.log").exists() else []
    return list(dict.fromkeys(line.split()[0] for line in lines if line.strip()))


def assert_every_file_readable(root: Path) -> None:
    for part in list(root.glob("epochs/*.parquet")) + list(root.glob("trials/*.parquet")):
        pq.read_table(part)
    for ckpt in root.glob("*/checkpoint_*/state.pt"):
        torch.load(ckpt, weights_only=True)


def assert_one_row_per_trial_and_epoch(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials, epochs = pd.read_parquet(root / "trials"), pd.read_parquet(root / "epochs")
    assert trials["trial_id"].is_unique
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    runs = epochs.groupby("trial_id")["epoch"].agg(["count", "max"])
    assert runs["count"].to_dict() == trials.set_index("trial_id")["epochs_run"].to_dict()
    assert (runs["count"] == runs["max"]).all(), "epochs are 1..epochs_run without gaps"
    return trials, epochs


@pytest.mark.slow
def test_a_search_whose_driver_is_killed_resumes_to_exactly_its_trials_then_extends(tmp_path):
    (tmp_path / "tiny.yaml").write_text(SPACE)
    root = tmp_path / "out" / "s"
    driver = Driver(["search", str(tmp_path / "tiny.yaml"), "--no-probes", "--output", str(tmp_path / "out"), "--name", "s",
                     "--concurrency", "1", "--no-feature-cache"], tmp_path / "search.log")  # uncached Lite0 epochs: slow enough
    try:  # kill it once the first trial has ended and the next one has started
        driver.wait_for(lambda: list(root.glob("trials/*.parquet")) and len(trial_dirs(root)) >= 2, timeout=240)
    finally:
        driver.kill()
    assert_every_file_readable(root)
    before = pd.read_parquet(root / "trials")
    assert 1 <= len(before) < 3

    resumed = Driver(["resume", str(root)], tmp_path / "resume.log")
    assert resumed.wait(timeout=300) == 0, resumed.tail()
    assert "resuming search" in resumed.tail(100_000) and "ASHA: replayed" in resumed.tail(100_000)
    trials, _ = assert_one_row_per_trial_and_epoch(root)
    assert len(trials) == 3 and set(before["trial_id"]) <= set(trials["trial_id"])
    assert set(trials["status"]) <= {"completed", "pruned"}

    extended = Driver(["resume", str(root), "--samples", "4"], tmp_path / "extend.log")
    assert extended.wait(timeout=300) == 0, extended.tail()
    trials, _ = assert_one_row_per_trial_and_epoch(root)
    assert len(trials) == 4
    assert json.loads((root / "search.json").read_text())["budget"]["samples"] == 4
    # The study continued: the restored searcher holds every trial, not only the new one.
    import optuna

    # The persisted study went on: the extended search's trials joined the same study.
    study = optuna.load_study(study_name=root.name, storage=f"sqlite:///{root / 'optuna.db'}")
    finished = [t for t in study.trials if t.user_attrs.get("tune_tl_status") != "orphaned"]
    assert len(finished) == 4 and all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials), \
        "every Ray trial is in the study; trials the killed driver asked for after its last snapshot are failed, not left running"
    assert "Search finished:" in extended.tail()
    assert_every_file_readable(root)


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
