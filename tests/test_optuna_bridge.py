"""Optuna's records agree with what happened: per-epoch values, PRUNED/FAIL/COMPLETE, a persisted study."""

import math
import pickle
import warnings

import optuna
import pandas as pd
import pytest

from tune_tl.cli import main
from tune_tl.search.sampler import HonestOptunaSearch, storage_url

STATE_OF_STATUS = {"completed": "COMPLETE", "pruned": "PRUNED", "diverged": "FAIL", "error": "FAIL"}


def space(trial):
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)


def searcher(tmp_path, max_epochs=3):
    return HonestOptunaSearch(space, "val_acc", "max", max_epochs, optuna.samplers.RandomSampler(seed=0),
                              storage=storage_url(tmp_path / "optuna.db"), study_name="unit")


def test_each_way_a_trial_ends_gets_its_own_optuna_state(tmp_path):
    s = searcher(tmp_path)
    for tid in "abcde":
        s.suggest(tid)
    for epoch, acc in enumerate([0.5, 0.8, 0.7], start=1):  # a: ran every epoch; best is epoch 2
        s.on_trial_result("a", {"epoch": epoch, "val_acc": acc, "diverged": False})
    s.on_trial_complete("a", {"epoch": 3, "val_acc": 0.7, "diverged": False})
    s.on_trial_result("b", {"epoch": 1, "val_acc": 0.3, "diverged": False})  # b: stopped by ASHA
    s.on_trial_complete("b", {"epoch": 1, "val_acc": 0.3, "diverged": False})
    s.on_trial_result("c", {"epoch": 1, "val_acc": 0.1, "diverged": True})  # c: NaN loss
    s.on_trial_complete("c", {"epoch": 1, "val_acc": 0.1, "diverged": True})
    s.on_trial_complete("d", error=True)  # d: raised
    s.on_trial_complete("e")  # e: removed before it ran

    study = optuna.load_study(study_name="unit", storage=storage_url(tmp_path / "optuna.db"))
    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert {k: (t.state.name, t.user_attrs["tune_tl_status"]) for k, t in by_id.items()} == {
        "a": ("COMPLETE", "completed"), "b": ("PRUNED", "pruned"), "c": ("FAIL", "diverged"),
        "d": ("FAIL", "error"), "e": ("PRUNED", "pruned"),
    }
    assert by_id["a"].value == 0.8  # the best epoch, as best_val_acc in Parquet
    assert by_id["a"].intermediate_values == {1: 0.5, 2: 0.8, 3: 0.7}
    assert by_id["b"].intermediate_values == {1: 0.3}


def test_the_searcher_survives_pickling_with_its_sqlite_study_as_ray_checkpoints_it(tmp_path):
    s = searcher(tmp_path)
    s.suggest("a")
    s.on_trial_result("a", {"epoch": 1, "val_acc": 0.4, "diverged": False})
    path = tmp_path / "searcher.pkl"
    s.save(str(path))
    restored = searcher(tmp_path)
    restored.restore(str(path))
    restored.on_trial_result("a", {"epoch": 2, "val_acc": 0.6, "diverged": False})
    restored.on_trial_complete("a", {"epoch": 2, "val_acc": 0.6, "diverged": False})
    trial = optuna.load_study(study_name="unit", storage=storage_url(tmp_path / "optuna.db")).trials[0]
    assert trial.state.name == "PRUNED" and trial.intermediate_values == {1: 0.4, 2: 0.6}
    assert pickle.loads(pickle.dumps(restored))._max_epochs == 3


def test_a_searcher_restored_from_a_snapshot_older_than_the_study_tells_nothing_twice(tmp_path):
    """What a killed driver leaves: Ray's pickled searcher predates trial a's end and b's first epoch in the study."""
    s = searcher(tmp_path, max_epochs=2)
    s.suggest("a")
    s.suggest("b")
    s.on_trial_result("a", {"epoch": 1, "val_acc": 0.5, "diverged": False})
    path = tmp_path / "searcher.pkl"
    s.save(str(path))  # Ray's last snapshot
    s.on_trial_result("a", {"epoch": 2, "val_acc": 0.7, "diverged": False})
    s.on_trial_complete("a", {"epoch": 2, "val_acc": 0.7, "diverged": False})
    s.on_trial_result("b", {"epoch": 1, "val_acc": 0.2, "diverged": False})

    restored = searcher(tmp_path, max_epochs=2)
    restored.restore(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna's "already reported" is a UserWarning; a finished trial raises
        restored.on_trial_complete("a", {"epoch": 1, "val_acc": 0.5, "diverged": False})  # Ray ends it again
        restored.on_trial_result("b", {"epoch": 1, "val_acc": 0.25, "diverged": False})  # re-run from its start
        restored.on_trial_result("b", {"epoch": 2, "val_acc": 0.3, "diverged": False})
        restored.on_trial_complete("b", {"epoch": 2, "val_acc": 0.3, "diverged": False})
    by_id = {t.user_attrs["ray_trial_id"]: t
             for t in optuna.load_study(study_name="unit", storage=storage_url(tmp_path / "optuna.db")).trials}
    assert (by_id["a"].state.name, by_id["a"].value) == ("COMPLETE", 0.7)
    assert (by_id["b"].state.name, by_id["b"].value, by_id["b"].intermediate_values) == ("COMPLETE", 0.3, {1: 0.2, 2: 0.3})


# Trial 0 diverges (absurd SGD step), trial 1 errors (a block this backbone lacks); the rest are sampled.
PY_SPACE = '''
SETTINGS = {"seed": 0, "budget": {"samples": 5, "max_epochs": 3, "grace_period": 1, "reduction_factor": 2},
            "resolutions": [32]}

def space(trial):
    fixed = {"resolution": 32, "batch_size": 128}
    if trial.number == 0:
        return {**fixed, "freeze_policy": "head_only", "optimizer": "sgd", "lr": 1.0e36}
    if trial.number == 1:
        return {**fixed, "freeze_policy": "surgical", "train_block": 50}
    policy = trial.suggest_categorical("freeze_policy", ["head_only", "surgical"])
    if policy == "surgical":
        fixed["train_block"] = 8
        fixed["lp_epochs"] = 1
    trial.suggest_float("lr", 1.0e-4, 3.0e-2, log=True)
    return fixed
'''


@pytest.mark.slow
def test_optuna_trial_states_agree_with_parquet_statuses_after_a_real_search(ray_local, tmp_path):
    space_file = tmp_path / "space.py"
    space_file.write_text(PY_SPACE)
    code = main(["search", str(space_file), "--no-probes", "--output", str(tmp_path / "out"), "--name", "honest", "--concurrency", "2"])
    assert code == 0
    root = tmp_path / "out" / "honest"
    trials = pd.read_parquet(root / "trials").set_index("trial_id")
    epochs = pd.read_parquet(root / "epochs")
    study = optuna.load_study(study_name="honest", storage=f"sqlite:///{root / 'optuna.db'}")

    assert len(study.trials) == len(trials) == 5
    assert {"diverged", "error"} <= set(trials["status"])
    for ot in study.trials:
        row = trials.loc[ot.user_attrs["ray_trial_id"]]
        assert ot.state.name == STATE_OF_STATUS[row["status"]]
        assert ot.user_attrs["tune_tl_status"] == row["status"]
        if row["status"] == "completed":
            assert ot.value == pytest.approx(row["best_val_acc"])
        rows = epochs[epochs["trial_id"] == row.name].sort_values("epoch")
        assert ot.intermediate_values == pytest.approx(dict(zip(rows["epoch"], rows["val_acc"], strict=True)))

    diverged = trials[trials["status"] == "diverged"]
    assert len(diverged) == 1 and diverged["epochs_run"].iloc[0] == 1  # stopped at once, not left to ASHA
    # LP→FT shows in the rows: surgical trials probe first, head-only trials are cached probes throughout.
    merged = epochs.merge(trials[["freeze_policy"]], left_on="trial_id", right_index=True)
    surgical = merged[merged["freeze_policy"] == "surgical"]
    assert (surgical.loc[surgical["epoch"] == 1, "phase"] == "probe").all()
    assert (surgical.loc[surgical["epoch"] > 1, "phase"] == "finetune").all()
    assert not surgical.loc[surgical["epoch"] > 1, "cached_features"].any()
    assert (surgical.loc[surgical["epoch"] > 1, "cached_blocks"] == 8).all()  # the blocks before train_block: the boundary cache
    head_only = merged[(merged["freeze_policy"] == "head_only") & ~merged["diverged"]]
    assert head_only["cached_features"].all() and len(head_only)
    assert (head_only["cached_blocks"] == 9).all()
    assert len(list((root / "feature_cache").glob("*.npz"))) == 1
    assert math.isfinite(study.best_value)
