"""Warm starts: earlier trials that the new space could have sampled seed its study; other data is refused."""

import json

import numpy as np
import optuna
import pandas as pd
import pytest
from spaces import FINISHED, write_tiny_space

from tune_tl.cli import main
from tune_tl.config import load_space
from tune_tl.data.manifest import data_fingerprint
from tune_tl.data.types import PreparedData, Split
from tune_tl.errors import TuneTLError
from tune_tl.search.warm_start import check_same_data, frozen_trials, seed_study

SPACE = """
params:
  resolution: 32
  optimizer: [adamw, sgd]
  lr: {low: 1.0e-4, high: 1.0e-1, log: true}
"""


def _data(seed=0, labels=(0, 1, 0, 1), resolutions=(32,)):
    rng = np.random.default_rng(seed)
    y = np.array(labels)
    splits = {r: Split(rng.integers(0, 255, (4, 3, r, r), dtype=np.uint8), y, rng.integers(0, 255, (2, 3, r, r), dtype=np.uint8), y[:2])
              for r in resolutions}
    return PreparedData(["a", "b"], splits)


def test_the_same_data_has_the_same_fingerprint_and_other_data_is_refused_naming_what_differs():
    mine = data_fingerprint(_data())
    check_same_data(mine, data_fingerprint(_data()), "old")
    check_same_data(mine, data_fingerprint(_data(resolutions=(32, 64))), "old")  # compared where both have pixels
    with pytest.raises(TuneTLError, match="--warm-start old: its images differ from this data's at 32 px"):
        check_same_data(mine, data_fingerprint(_data(seed=1)), "old")
    with pytest.raises(TuneTLError, match="train/val split differs"):
        check_same_data(mine, data_fingerprint(_data(labels=(1, 0, 1, 0))), "old")
    with pytest.raises(TuneTLError, match="no resolution in common"):
        check_same_data(mine, data_fingerprint(_data(resolutions=(64,))), "old")
    with pytest.raises(TuneTLError, match="records no data fingerprint"):
        check_same_data(mine, None, "old")
    other = dict(mine, classes=["cat", "dog"])
    with pytest.raises(TuneTLError, match=r"its classes \['cat', 'dog'\] differ"):
        check_same_data(mine, other, "old")


def _table():
    trials = pd.DataFrame([
        {"trial_id": "t0", "status": "completed", "best_val_acc": 0.9, "resolution": 32, "optimizer": "adamw", "lr": 0.01,
         "momentum": None},
        {"trial_id": "t1", "status": "pruned", "best_val_acc": 0.5, "resolution": 32, "optimizer": "sgd", "lr": 0.001, "momentum": 0.9},
        {"trial_id": "t2", "status": "completed", "best_val_acc": 0.8, "resolution": 32, "optimizer": "adamw", "lr": 0.5, "momentum": None},
        {"trial_id": "t3", "status": "completed", "best_val_acc": 0.7, "resolution": 64, "optimizer": "adamw", "lr": 0.01,
         "momentum": None},
        {"trial_id": "t4", "status": "diverged", "best_val_acc": None, "resolution": 32, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
    ])
    epochs = pd.DataFrame({"trial_id": ["t0", "t0", "t1"], "epoch": [1, 2, 1], "val_acc": [0.8, 0.9, 0.5]})
    return trials, epochs


def test_only_trials_the_new_space_could_have_sampled_are_added_with_honest_states(tmp_path):
    """t2's lr is outside the new range, t3 ran at another (fixed) resolution, t4 diverged: left out."""
    fn = load_space(_write(tmp_path, SPACE)).define_by_run(9)
    trials, epochs = _table()
    added = frozen_trials(trials, epochs, fn, "efficientnet_lite0", "old")
    assert [t.user_attrs["ray_trial_id"] for t in added] == ["t0", "t1"]
    t0, t1 = added
    assert t0.state == optuna.trial.TrialState.COMPLETE and t0.value == 0.9 and t0.intermediate_values == {1: 0.8, 2: 0.9}
    assert t0.params == {"optimizer": "adamw", "lr": 0.01}
    assert t1.state == optuna.trial.TrialState.PRUNED and t1.value is None and t1.intermediate_values == {1: 0.5}


def test_a_seeded_study_holds_the_earlier_trials_and_tpe_samples_from_it(tmp_path):
    fn = load_space(_write(tmp_path, SPACE)).define_by_run(9)
    trials, epochs = _table()
    seed_study(tmp_path / "optuna.db", "new", frozen_trials(trials, epochs, fn, "efficientnet_lite0", "old"))
    study = optuna.load_study(study_name="new", storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                              sampler=optuna.samplers.TPESampler(n_startup_trials=1, seed=0))
    assert len(study.trials) == 2 and study.best_value == 0.9
    trial = study.ask()
    fn(trial)  # distributions agree with the seeded trials' (no compatibility error)
    assert 1e-4 <= trial.params["lr"] <= 1e-1


def _write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.slow
def test_warm_start_puts_the_earlier_searchs_trials_in_the_new_study_and_refuses_other_data(finished_search, tmp_path, capsys):
    space = write_tiny_space(tmp_path, **FINISHED)  # the earlier search's space: each of its trials fits
    out = tmp_path / "out"
    assert main(["search", str(space), "--output", str(out), "--name", "second", "--scheduler", "fifo",
                 "--samples", "2", "--max-epochs", "1", "--warm-start", str(finished_search)]) == 0
    first = pd.read_parquet(finished_search / "trials").set_index("trial_id")
    study = optuna.load_study(study_name="second", storage=f"sqlite:///{out / 'second' / 'optuna.db'}")
    warm = {t.user_attrs["ray_trial_id"]: t for t in study.trials if "warm_start_from" in t.user_attrs}
    assert sorted(warm) == sorted(first.index[~first["probe"]]), "every trial but the probe: the new search probes for itself"
    assert set(first["status"]) <= {"completed", "pruned"}
    for trial_id, trial in warm.items():  # as the earlier search ended them: completed with its best epoch, or pruned
        if first.loc[trial_id, "status"] == "completed":
            assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == first.loc[trial_id, "best_val_acc"]
        else:
            assert trial.state == optuna.trial.TrialState.PRUNED
    assert len(study.trials) == (~first["probe"]).sum() + 2  # the earlier ones, then its own two (its probe: no sampled parameter)
    assert json.loads((out / "second" / "search.json").read_text())["options"]["warm_start"] == [str(finished_search)]

    other = write_tiny_space(tmp_path, "other.yaml", data={"val_fraction": 0.3}, **FINISHED)
    capsys.readouterr()
    assert main(["search", str(other), "--output", str(out), "--name", "third", "--warm-start", str(finished_search)]) == 2
    assert "train/val split differs" in capsys.readouterr().err
    assert not (out / "third").exists()
