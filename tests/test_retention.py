"""Checkpoint retention: once trials end, only the best epoch of the top K stays on disk (``search.retention``)."""

import json
from types import SimpleNamespace

import pytest
import torch

from tune_tl.search.retention import CheckpointRetention, kept_trials
from tune_tl.store.results import TRIAL_SCHEMA, write_table_atomic
from tune_tl.store.search_run import CHECKPOINT_FILE, SearchRun
from tune_tl.store.storage import Location


def trial_with_checkpoints(root, trial_id: str, accs: list[float]) -> None:
    """A trial's folder as Ray leaves it: the best epoch's checkpoint and the latest, plus Ray's own small files."""
    best = max(range(len(accs)), key=lambda i: (accs[i], i)) + 1
    for index, epoch in enumerate(sorted({best, len(accs)})):
        folder = root / trial_id / f"checkpoint_{index:06d}"
        folder.mkdir(parents=True)
        history = [{"epoch": e + 1, "val_acc": a} for e, a in enumerate(accs[:epoch])]
        torch.save({"epoch": epoch, "model": {"w": torch.zeros(1000)}, "optimizer": {"state": {0: torch.zeros(2000)}},
                    "history": history}, folder / CHECKPOINT_FILE)
    (root / trial_id / "params.json").write_text("{}")


def ended(root, rows: list[tuple[str, str, float]]) -> None:
    write_table_atomic([{"trial_id": t, "status": s, "best_val_acc": a, "epochs_run": 3} for t, s, a in rows], TRIAL_SCHEMA,
                       root / "trials")


def retention(root, keep: int, running: set[str] = frozenset()) -> CheckpointRetention:
    callback = CheckpointRetention(Location.parse(root), keep)
    callback.on_step_end(0, [SimpleNamespace(trial_id=t, status="RUNNING") for t in running])
    return callback


def on_disk(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.glob("*/checkpoint_*"))


def test_ended_trials_keep_only_the_best_epoch_of_the_top_k_and_search_json_lists_it(tmp_path):
    (tmp_path / "search.json").write_text("{}")
    trial_with_checkpoints(tmp_path, "a", [0.5, 0.9, 0.7])  # best epoch 2, latest 3: two folders
    trial_with_checkpoints(tmp_path, "b", [0.6, 0.8, 0.85])  # best is the latest: one folder
    trial_with_checkpoints(tmp_path, "c", [0.3, 0.4, 0.2])
    trial_with_checkpoints(tmp_path, "d", [float("nan")])  # diverged: never kept
    ended(tmp_path, [("a", "completed", 0.9), ("b", "completed", 0.85), ("c", "pruned", 0.4), ("d", "diverged", None)])
    retention(tmp_path, keep=2).on_experiment_end([])
    assert on_disk(tmp_path) == ["a/checkpoint_000000", "b/checkpoint_000000"]
    assert (tmp_path / "c" / "params.json").exists(), "only checkpoint folders go; Ray's small files stay"
    kept = json.loads((tmp_path / "search.json").read_text())["checkpoints"]
    assert kept["keep"] == 2 and [(k["trial_id"], k["path"]) for k in kept["kept"]] == [("a", "a/checkpoint_000000"),
                                                                                        ("b", "b/checkpoint_000000")]
    kept_state = torch.load(tmp_path / "a" / "checkpoint_000000" / CHECKPOINT_FILE, weights_only=True)
    assert kept_state["epoch"] == 2 and set(kept_state) == {"epoch", "model", "history"}, "weights and history, no optimizer"


def test_a_running_trial_keeps_its_latest_and_best_and_a_trial_pushed_out_of_the_top_k_loses_its_checkpoint(tmp_path):
    (tmp_path / "search.json").write_text("{}")
    trial_with_checkpoints(tmp_path, "a", [0.5, 0.7])
    trial_with_checkpoints(tmp_path, "r", [0.9, 0.6])  # still running: Ray may restore it from its latest
    ended(tmp_path, [("a", "completed", 0.7)])
    callback = retention(tmp_path, keep=1, running={"r"})
    callback.prune()
    assert on_disk(tmp_path) == ["a/checkpoint_000000", "r/checkpoint_000000", "r/checkpoint_000001"]
    ended(tmp_path, [("r", "completed", 0.9)])  # r ends better than a: a can never be among the top 1 again
    callback.on_experiment_end([SimpleNamespace(trial_id="r", status="TERMINATED")])
    assert on_disk(tmp_path) == ["r/checkpoint_000000"]
    assert [k["trial_id"] for k in json.loads((tmp_path / "search.json").read_text())["checkpoints"]["kept"]] == ["r"]
    with pytest.raises(Exception, match="has no weights on disk"):
        SearchRun(tmp_path).best_checkpoint("a")


def test_nothing_is_deleted_before_ray_has_said_which_trials_it_may_still_run(tmp_path):
    trial_with_checkpoints(tmp_path, "a", [0.5, 0.7])
    ended(tmp_path, [("a", "pruned", 0.7)])
    callback = CheckpointRetention(Location.parse(tmp_path), 0)
    assert callback.get_state() is None and on_disk(tmp_path) == ["a/checkpoint_000000"]


def test_the_top_k_follow_the_leaderboard_order():
    import pandas as pd

    trials = pd.DataFrame({"trial_id": ["x", "y", "z", "w"], "status": ["pruned", "completed", "error", "completed"],
                           "best_val_acc": [0.8, 0.8, 0.99, 0.5], "epochs_run": [1, 3, 1, 3]})
    assert kept_trials(trials, 2) == ["x", "y"] and kept_trials(trials, 0) == []
