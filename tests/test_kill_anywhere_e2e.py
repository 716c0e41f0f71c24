"""Kill a search's driver at any moment, resume it, and find one consistent search.

Each case runs a small real search (``python -m tune_tl.cli`` with its own Ray, ``faults.Driver``) that
stops at one named moment (``tests/fault_injection/sitecustomize.py``: a hook stops the process that
reaches it, deterministically, no sleeping), SIGKILLs every process of it, runs ``tune-tl resume``, and
checks what a user relies on: every table the kill left is readable, the resume exits 0,
the search has exactly its trials, one ``epochs`` row per trial and epoch, each Parquet trial has one Optuna
trial whose final state matches its ``status``, no trial is left running in the study, no Optuna warning
reached the terminal, and checkpoint retention kept exactly the best epoch of the top trials: no other
checkpoint is left anywhere in the folder, and besides them and the feature cache it holds well under 1 MB.
One chain's search is then extended by a trial (``tune-tl resume --samples 3``), which joins the same study.

The search (``SPACE``): two trials of the tests' frozen tiny backbone (``tests/tiny_backbone.py``: the point
here is the kills, not the backbone, and its processes never import timm or torchvision) at 32 px on digits
with a linear head; the first learns (completed, 2 epochs), the second has a learning rate too small to
learn anything and epoch-rung ASHA prunes it after its first epoch. The feature cache keeps epochs to a
fraction of a second, so each moment costs one process start.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from faults import Driver, assert_every_file_readable, assert_one_row_per_trial_and_epoch

TRIALS, MAX_EPOCHS, KEEP = 2, 2, 1

SPACE = '''
SETTINGS = {"seed": 0, "resolutions": [32], "backbone": {"name": "tiny_test_cnn", "weights": "imagenet"},
            "budget": {"samples": 2, "max_epochs": 2, "grace_period": 1, "reduction_factor": 2, "keep_checkpoints": 1}}

def space(trial):
    trial.suggest_categorical("head", ["linear"])
    lr = 3.0e-2 if trial.number == 0 else 1.0e-9  # later trials learn nothing: ASHA prunes them after epoch 1
    return {"resolution": 32, "batch_size": 128, "freeze_blocks": 9, "optimizer": "sgd", "lr": lr}
'''

#: The moments (``sitecustomize.MOMENTS``) at which the search is killed, in two chains: the search stops at the
#: first moment, each resume at the next, and a last resume must finish the search. A chain costs one process
#: start per moment (a search or resume imports torch and Ray and starts a Ray instance: most of a case's time);
#: every resume in it starts from the mess the kill before left, as a user's would.
CHAINS = {
    "first_trial": ["first_report", "mid_epoch", "snapshot_upload", "checkpoint_copy", "checkpoint_registered", "study_write",
                    "snapshot_flush"],
    "second_trial": ["after_complete", "after_suggest", "last_trial", "after_prune", "reconcile", "retention", "compaction"],
}
STATE_OF = {"completed": "COMPLETE", "pruned": "PRUNED", "diverged": "FAIL", "oom": "FAIL", "error": "FAIL"}


def search_args(tmp: Path) -> list[str]:
    (tmp / "space.py").write_text(SPACE)
    return ["search", str(tmp / "space.py"), "--no-probes", "--output", str(tmp / "out"), "--name", "k", "--concurrency", "1",
            "--scheduler", "asha"]


def kill_at(args: list[str], moment: str, tmp: Path, log: str) -> str:
    """Run ``args`` until a process stops at ``moment``; SIGKILL the search; what the hook wrote."""
    driver = Driver(args, tmp / log, fault_dir=tmp / "faults", at=moment, env={"TUNE_TL_FAULT_TRIALS": str(TRIALS)})
    try:
        return driver.wait_for_moment(timeout=300)
    finally:
        driver.kill()


def resume(root: Path, tmp: Path, log: str = "resume.log", *flags: str) -> str:
    driver = Driver(["resume", str(root), "--space", str(tmp / "space.py"), *flags], tmp / log)
    code = driver.wait(timeout=300)
    assert code == 0, driver.tail()
    return driver.tail(100_000)


def assert_one_consistent_search(root: Path, output: str) -> None:
    trials, epochs = pd.read_parquet(root / "trials"), pd.read_parquet(root / "epochs")
    assert len(trials) == TRIALS and trials["trial_id"].is_unique, trials[["trial_id", "status"]]
    assert sorted(trials["status"]) == ["completed", "pruned"], "the kills changed no trial's outcome"
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert set(epochs["trial_id"]) <= set(trials["trial_id"]), "no epoch rows of a trial that is not in the search"
    for row in trials.itertuples():
        runs = sorted(epochs.loc[epochs["trial_id"] == row.trial_id, "epoch"])
        assert runs == list(range(1, row.epochs_run + 1)), (row.trial_id, runs)
    study = optuna.load_study(study_name=root.name, storage=f"sqlite:///{root / 'optuna.db'}")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING], "no Optuna trial left running"
    for row in trials.itertuples():
        mine = [t for t in study.trials if t.user_attrs.get("ray_trial_id") == row.trial_id]
        assert len(mine) == 1, f"trial {row.trial_id}: {len(mine)} Optuna trials"
        assert mine[0].state.name == STATE_OF[row.status] and mine[0].user_attrs["tune_tl_status"] == row.status
        if row.status == "completed":
            assert mine[0].value == pytest.approx(row.best_val_acc)
    assert "UserWarning" not in output and "Traceback" not in output, output[-3000:]
    assert "Search finished:" in output
    kept = json.loads((root / "search.json").read_text())["checkpoints"]["kept"]
    best = trials[trials["status"].isin(["completed", "pruned"])].sort_values("best_val_acc", ascending=False)
    assert [k["trial_id"] for k in kept] == list(best["trial_id"][:KEEP])
    on_disk = sorted(str(p.relative_to(root)) for p in root.glob("*/checkpoint_*"))
    assert on_disk == [k["path"] for k in kept], "only the kept checkpoints are left"
    weights = sorted(str(p.parent.relative_to(root)) for p in root.rglob("state.pt"))
    assert weights == [k["path"] for k in kept], "no copy of a checkpoint anywhere else in the folder"
    for k in kept:
        state = torch.load(root / k["path"] / "state.pt", weights_only=True)
        assert state["history"][-1]["val_acc"] == pytest.approx(k["best_val_acc"])
    # The folder is what it keeps: the kept checkpoints, the feature cache, and well under 1 MB of tables, study and Ray files.
    kept_bytes = sum(size(root / k["path"]) for k in kept)
    rest = size(root) - kept_bytes - size(root / "feature_cache")
    assert rest < 1_000_000, f"search folder {size(root)} B: checkpoints kept {kept_bytes} B, other {rest} B"


def size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


@pytest.mark.slow
@pytest.mark.parametrize("chain", list(CHAINS))
def test_a_search_killed_at_any_moment_resumes_to_one_consistent_search(chain, tmp_path):
    root = tmp_path / "out" / "k"
    args = search_args(tmp_path)
    for step, moment in enumerate(CHAINS[chain]):
        marker = kill_at(args, moment, tmp_path, f"{step}-{moment}.log")
        assert marker.startswith(moment), marker
        # Every table the kill left reads. A checkpoint Ray was copying may be torn: the resume discards it (below,
        # only the kept checkpoints are left, and each loads).
        assert_every_file_readable(root, checkpoints=False)
        args = ["resume", str(root), "--space", str(tmp_path / "space.py")]  # a .py space comes from the command line only
    output = resume(root, tmp_path)
    assert "resuming search" in output
    assert_one_consistent_search(root, output)
    if chain == "second_trial":  # one chain's search, resumed to its end, is then extended by a trial
        assert_extends_by_one_trial(root, tmp_path)


def assert_extends_by_one_trial(root: Path, tmp: Path) -> None:
    """``tune-tl resume --samples N+1`` runs one more trial in the same study and records the new budget."""
    output = resume(root, tmp, "extend.log", "--samples", str(TRIALS + 1))
    assert "ASHA: replayed" in output and "Search finished:" in output
    trials, _ = assert_one_row_per_trial_and_epoch(root)
    assert len(trials) == TRIALS + 1 and set(trials["status"]) <= {"completed", "pruned"}
    assert json.loads((root / "search.json").read_text())["budget"]["samples"] == TRIALS + 1
    study = optuna.load_study(study_name=root.name, storage=f"sqlite:///{root / 'optuna.db'}")
    finished = [t for t in study.trials if t.user_attrs.get("tune_tl_status") != "orphaned"]
    assert len(finished) == TRIALS + 1, "the extended search's trial joined the same study"
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert_every_file_readable(root)


def test_every_moment_has_a_hook():
    hooks = Path(__file__).parent / "fault_injection" / "sitecustomize.py"
    named = set(re.findall(r'reached\("(\w+)"', hooks.read_text()))
    moments = [m for chain in CHAINS.values() for m in chain]
    assert set(moments) <= named and len(set(moments)) == len(moments) >= 12
