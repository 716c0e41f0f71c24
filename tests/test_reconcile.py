"""What ``tune-tl resume`` settles before Ray restores (``search.reconcile``), on a folder a killed driver left.

Ray's snapshot is stood in for (``ray_snapshot``); the study, the Parquet tables and the checkpoints are real.
The end-to-end version, with real kills, is ``test_kill_anywhere_e2e.py``.
"""

from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from tune_tl.search import reconcile as reconcile_module
from tune_tl.search.reconcile import reconcile
from tune_tl.search.sampler import storage_url
from tune_tl.store.results import EPOCH_SCHEMA, TRIAL_SCHEMA, write_table_atomic
from tune_tl.store.search_run import CHECKPOINT_FILE, SearchRun

LR = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}


def checkpoint(root, trial_id: str, index: int, accs: list[float]) -> None:
    folder = root / trial_id / f"checkpoint_{index:06d}"
    folder.mkdir(parents=True)
    history = [{"epoch": e + 1, "train_loss": 1.0, "val_loss": 1.0, "val_acc": a, "scheduled_lr": 0.01, "epoch_seconds": 2.0,
                "trainable_params": 10, "diverged": False, "phase": "finetune", "cached_features": False} for e, a in enumerate(accs)]
    torch.save({"epoch": len(accs), "model": {"w": torch.zeros(3)}, "history": history}, folder / CHECKPOINT_FILE)


def ray_trial(root, trial_id: str, status: str, checkpoint_index: int | None = None):
    latest = None if checkpoint_index is None else SimpleNamespace(path=str(root / trial_id / f"checkpoint_{checkpoint_index:06d}"))
    return SimpleNamespace(trial_id=trial_id, status=status, config={"lr": 0.01}, checkpoint=latest)


@pytest.fixture
def killed(tmp_path, monkeypatch):
    """a: completed in the study after Ray's snapshot (no rows yet); b: pruned and flushed, never in Ray's snapshot;
    c: started after the snapshot and never ended; e: running in the snapshot; w: a warm start's earlier trial."""
    study = optuna.create_study(storage=storage_url(tmp_path / "optuna.db"), study_name="r", direction="maximize")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.7, params={"lr": 0.01}, distributions=LR,
                                 intermediate_values={1: 0.5, 2: 0.7}, user_attrs={"ray_trial_id": "a", "tune_tl_status": "completed"}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"lr": 0.02}, distributions=LR, intermediate_values={1: 0.2},
                                 user_attrs={"ray_trial_id": "b", "tune_tl_status": "pruned"}))
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.9, params={"lr": 0.03}, distributions=LR,
                                 user_attrs={"ray_trial_id": "w", "tune_tl_status": "completed", "warm_start_from": "old"}))
    for ray_id in ("c", "e"):
        trial = study.ask(LR)
        trial.set_user_attr("ray_trial_id", ray_id)
        trial.report(0.3, step=1)
    checkpoint(tmp_path, "a", 1, [0.5, 0.7])  # Ray deleted checkpoint_000000, which its snapshot names
    checkpoint(tmp_path, "c", 0, [0.3])
    checkpoint(tmp_path, "e", 0, [0.3])
    write_table_atomic([{"trial_id": "a", "epoch": 1, "val_acc": 0.5, "diverged": False},
                        {"trial_id": "b", "epoch": 1, "val_acc": 0.2, "diverged": False},
                        {"trial_id": "c", "epoch": 1, "val_acc": 0.3, "diverged": False}], EPOCH_SCHEMA, tmp_path / "epochs")
    write_table_atomic([{"trial_id": "b", "status": "pruned", "best_val_acc": 0.2, "epochs_run": 1}], TRIAL_SCHEMA, tmp_path / "trials")
    snapshot = {"a": ray_trial(tmp_path, "a", "RUNNING", 0), "e": ray_trial(tmp_path, "e", "RUNNING", 0)}
    monkeypatch.setattr(reconcile_module, "ray_snapshot", lambda run: snapshot)
    return tmp_path, study


def test_each_record_wins_for_its_own_fact_and_nothing_is_counted_twice(killed):
    root, study = killed
    done = reconcile(SearchRun(root), study, space=lambda trial: {}, max_epochs=2)
    assert done.ended == {"a"} and done.will_run == {"e"} and done.created == 3
    assert (done.adopted, done.discarded, done.rebuilt) == (("b",), ("c",), ("a",))

    run = SearchRun(root)
    trials = run.trials().set_index("trial_id")
    assert sorted(trials.index) == ["a", "b"], "no row for the discarded trial nor the warm start's"
    assert (trials.loc["a", "status"], trials.loc["a", "best_val_acc"], trials.loc["a", "lr"]) == ("completed", 0.7, 0.01)
    epochs = run.epochs()
    assert sorted(map(tuple, epochs[["trial_id", "epoch"]].values.tolist())) == [("a", 1), ("a", 2), ("b", 1)]
    assert run.checkpoint_paths("c") == [], "the discarded trial's checkpoints are gone"
    assert (root / "a" / "checkpoint_000000").is_dir(), "Ray finds the folder its snapshot names"
    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert (by_id["c"].state, by_id["c"].user_attrs["tune_tl_status"]) == (TrialState.FAIL, "orphaned")
    assert by_id["e"].state == TrialState.RUNNING


def test_reconciling_again_changes_nothing(killed):
    root, study = killed
    first = reconcile(SearchRun(root), study, space=lambda trial: {}, max_epochs=2)
    tables = (SearchRun(root).trials(), SearchRun(root).epochs())
    again = reconcile(SearchRun(root), study, space=lambda trial: {}, max_epochs=2)
    assert (again.ended, again.will_run, again.created) == (first.ended, first.will_run, first.created)
    assert again.rebuilt == () and again.discarded == ()
    pd.testing.assert_frame_equal(SearchRun(root).trials(), tables[0])
    pd.testing.assert_frame_equal(SearchRun(root).epochs(), tables[1])
