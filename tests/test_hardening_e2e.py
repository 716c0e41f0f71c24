"""Real processes: two same-name searches started together, then a ``.py``-space search resumed in a new process."""

import json

import pandas as pd
import pytest
from faults import Driver

pytestmark = pytest.mark.processes

PY_SPACE = '''
SETTINGS = {"seed": 0, "resolutions": [32], "backbone": {"name": "tiny_test_cnn", "weights": "imagenet"},
            "budget": {"samples": 1, "max_epochs": 1, "grace_period": 1, "reduction_factor": 2}}


def space(trial):
    trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    return {"resolution": 32, "batch_size": 128, "freeze_blocks": 9}
'''


@pytest.mark.slow
def test_two_same_name_searches_started_together_one_runs_and_a_py_space_resumes_in_a_new_process(tmp_path):
    (tmp_path / "space.py").write_text(PY_SPACE)
    args = ["search", str(tmp_path / "space.py"), "--no-probes", "--output", str(tmp_path / "out"), "--name", "s"]
    first, second = Driver(args, tmp_path / "a.log"), Driver(args, tmp_path / "b.log")
    codes = [first.wait(timeout=400), second.wait(timeout=400)]
    logs = [first.tail(100_000), second.tail(100_000)]
    assert sorted(codes) == [0, 2], logs
    refused = logs[codes.index(2)]
    assert "is in use by another tune-tl search" in refused or "already holds search results" in refused, refused
    root = tmp_path / "out" / "s"
    assert len(pd.read_parquet(root / "trials")) == 1
    meta = json.loads((root / "search.json").read_text())
    assert meta["space_path"] == str((tmp_path / "space.py").resolve()) and len(meta["space_sha256"]) == 64

    # A new process: Ray's tuner.pkl refers to the space module by a name that must be the same here.
    resumed = Driver(["resume", str(root), "--samples", "2", "--space", str(tmp_path / "space.py")], tmp_path / "resume.log")
    assert resumed.wait(timeout=400) == 0, resumed.tail()
    assert "ModuleNotFoundError" not in resumed.tail(100_000)
    trials = pd.read_parquet(root / "trials")
    assert len(trials) == 2 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"} and trials["lr"].between(1e-3, 1e-2).all()
    assert not (root / ".tune_tl.lock").exists()
