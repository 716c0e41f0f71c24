"""``budget.time`` / ``--time-budget``: validated up front; a real search stops and records every started trial."""

import json

import optuna
import pandas as pd
import pytest

from tune_tl.cli import main
from tune_tl.config.space import load_space, parse_settings
from tune_tl.errors import TuneTLError

FAST_SPACE = """
seed: 0
data: {source: digits, val_fraction: 0.2}
backbone: {name: efficientnet_lite0, weights: imagenet}
budget: {samples: 50, max_epochs: 2, time: 600}
params:
  resolution: 32
  batch_size: 128
  freeze_policy: head_only
  lr: {low: 1.0e-4, high: 3.0e-2, log: true}
"""


def test_budget_time_is_read_from_the_space_file_and_defaults_to_no_limit(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(FAST_SPACE)
    assert load_space(space).budget.time == 600.0
    assert load_space().budget.time is None
    assert parse_settings({"budget": {"time": None}}, "s.yaml", allow_params=False).budget.time is None


@pytest.mark.parametrize("value", [0, -5, "ten minutes", float("inf")])
def test_a_budget_time_that_is_not_a_positive_number_is_rejected_naming_the_key(value):
    with pytest.raises(TuneTLError, match=r"s\.yaml: budget\.time"):
        parse_settings({"budget": {"time": value}}, "s.yaml", allow_params=False)


def test_a_bad_time_budget_flag_exits_2_with_one_line_before_any_ray_work(tmp_path, capsys):
    code = main(["search", "--time-budget", "-1", "--output", str(tmp_path), "--name", "x"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "budget.time must be a positive number" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_time_budget_ends_a_real_search_and_every_started_trial_and_epoch_is_in_parquet(ray_local, tmp_path, capsys):
    space = tmp_path / "fast.yaml"
    space.write_text(FAST_SPACE)
    # 50 trials cannot all run in 60 s on any machine this suite runs on; the budget must end it.
    code = main(["search", str(space), "--time-budget", "60", "--output", str(tmp_path / "out"), "--name", "tb"])
    assert code == 0
    out = capsys.readouterr().out
    assert "The time budget ended the search" in out

    root = tmp_path / "out" / "tb"
    assert json.loads((root / "search.json").read_text())["ended_by_time_budget"] is True
    trials = pd.read_parquet(root / "trials")
    assert 1 <= len(trials) < 50 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "pruned"}
    assert (trials.loc[trials["status"] == "completed", "epochs_run"] == 2).all()
    if (root / "epochs").exists():  # every reported epoch is written, for every trial that has a row
        epochs = pd.read_parquet(root / "epochs")
        runs = epochs.groupby("trial_id")["epoch"].count()
        assert set(runs.index) <= set(trials["trial_id"])
        assert (trials.set_index("trial_id")["epochs_run"] == runs.reindex(trials["trial_id"]).fillna(0).astype(int)).all()

    study = optuna.load_study(study_name="tb", storage=f"sqlite:///{root / 'optuna.db'}")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING], "a stopped trial left RUNNING in Optuna"
    recorded = {t.user_attrs["ray_trial_id"]: t.user_attrs["tune_tl_status"] for t in study.trials}
    assert {recorded[t] for t in trials["trial_id"]} <= {"completed", "pruned"}
