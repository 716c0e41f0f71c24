"""``budget.time`` / ``--time-budget``: validated up front; a real search stops and records every started trial."""

import json

import optuna
import pandas as pd
import pytest
from spaces import write_tiny_space

from tune_tl.cli import main
from tune_tl.config import load_space, parse_settings
from tune_tl.config.params import TrialConfig
from tune_tl.config.spec import DEFAULT_TIME_BUDGET
from tune_tl.errors import TuneTLError
from tune_tl.search.finish import TEST_PASSES, wrap_up_seconds
from tune_tl.training.cost_model import CostModel

#: Many fast trials (head only) and a time limit.
FAST = {"budget": {"samples": 100, "max_epochs": 2, "time": 600, "grace_period": None, "reduction_factor": None},
        "params": {"freeze_policy": "head_only", "lr": {"low": 1.0e-4, "high": 3.0e-2, "log": True}}}


def test_budget_time_is_read_from_the_space_file_and_defaults_to_no_limit(tmp_path):
    space = write_tiny_space(tmp_path, "s.yaml", **FAST)
    assert load_space(space).budget.time == 600.0
    assert load_space().budget.time == DEFAULT_TIME_BUDGET == 600.0, "a search without a budget gets the default one"
    for none in (None, "none"):
        assert parse_settings({"budget": {"time": none}}, "s.yaml", allow_params=False).budget.time is None


@pytest.mark.parametrize("value", [0, -5, "ten minutes", float("inf")])
def test_a_budget_time_that_is_not_a_positive_number_is_rejected_naming_the_key(value):
    with pytest.raises(TuneTLError, match=r"s\.yaml: budget\.time"):
        parse_settings({"budget": {"time": value}}, "s.yaml", allow_params=False)


def test_the_end_of_a_search_is_priced_as_forward_passes_at_the_probes_rate_and_comes_out_of_the_budget():
    blocks = (1e6, 3e6)
    model = CostModel({"net": {32: blocks}}, {"net": 16}, num_classes=2, train_images=800, val_images=200)
    probe_work = model.epoch_cost(TrialConfig.from_dict({"backbone": "net", "resolution": 32, "freeze_policy": "head_only"}), 1)
    probes = [{"backbone": "net", "resolution": 32, "seconds": 2e-9 * probe_work}]  # 2 s per GFLOP
    # The kept trials' val probabilities are in their checkpoints: three of them and the probe are up to TEST_PASSES
    # passes over 100 test images of 4 MFLOP each.
    assert wrap_up_seconds(model, probes, 3, 100, "net", budget=600) == pytest.approx(2e-9 * 4e6 * TEST_PASSES * 100)
    assert wrap_up_seconds(model, probes, 1, 100, "net", budget=600) == pytest.approx(2e-9 * 4e6 * 2 * 100), "one trial, one probe"
    assert wrap_up_seconds(model, probes, 1, 0, "net", budget=600) == 0.0, "no test split: nothing to pass over"
    subset = [{**probes[0], "subset": 50}]  # its val features were not cached: one val pass (200 images)
    assert wrap_up_seconds(model, subset, 1, 0, "net", budget=600) == pytest.approx(2e-9 * 4e6 * 200)
    assert wrap_up_seconds(model, probes, 3, 100, "net", budget=0.024) == pytest.approx(0.004), "at most a sixth of the budget"
    assert wrap_up_seconds(model, [], 3, 100, "net", budget=600) == 0.0, "no probe to calibrate on: nothing reserved"


def test_a_bad_time_budget_flag_exits_2_with_one_line_before_any_ray_work(tmp_path, capsys):
    code = main(["search", "--time-budget", "-1", "--output", str(tmp_path), "--name", "x"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "budget.time must be a positive number" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_time_budget_ends_a_real_search_and_every_started_trial_and_epoch_is_in_parquet(ray_local, tmp_path, capsys):
    space = write_tiny_space(tmp_path, "fast.yaml", **FAST)
    # 100 trials cannot all run in 20 s on any machine this suite runs on; the budget must end it.
    code = main(["search", str(space), "--no-probes", "--time-budget", "20", "--output", str(tmp_path / "out"), "--name", "tb"])
    assert code == 0
    out = capsys.readouterr().out
    assert "The time budget ended the search" in out

    root = tmp_path / "out" / "tb"
    assert json.loads((root / "search.json").read_text())["ended_by_time_budget"] is True
    study = optuna.load_study(study_name="tb", storage=f"sqlite:///{root / 'optuna.db'}")
    assert study.trials and not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING], \
        "a trial the budget stopped was left RUNNING in Optuna"
    recorded = {t.user_attrs["ray_trial_id"]: t.user_attrs.get("tune_tl_status") for t in study.trials if "ray_trial_id" in t.user_attrs}
    # On a very busy machine no trial may have started within the budget: then there are no rows, and
    # every Optuna trial says so. Otherwise every started trial has its row and all its epochs.
    started = (root / "trials").exists()
    assert started or set(recorded.values()) == {"not_started"}
    if started:
        table = pd.read_parquet(root / "trials")
        assert table["trial_id"].is_unique
        # Near the end, configs whose first epoch could not finish in the time left are not started (search.admission):
        # rows of their own, with the reason; never a Ray trial.
        refused = table[table["status"] == "not_started"]
        assert refused["error"].str.contains("first epoch is predicted to take").all() and refused["epochs_run"].eq(0).all()
        trials = table[table["status"] != "not_started"]
        assert len(trials) < 100
        assert set(trials["status"]) <= {"completed", "pruned"}
        assert (trials.loc[trials["status"] == "completed", "epochs_run"] == 2).all()
        assert {recorded[t] for t in trials["trial_id"]} <= {"completed", "pruned"}
        assert set(recorded) - set(trials["trial_id"]) == {t for t, s in recorded.items() if s == "not_started"}
        if (root / "epochs").exists():  # every reported epoch is written, for every trial that has a row
            epochs = pd.read_parquet(root / "epochs")
            runs = epochs.groupby("trial_id")["epoch"].count()
            assert set(runs.index) <= set(trials["trial_id"])
            assert (trials.set_index("trial_id")["epochs_run"] == runs.reindex(trials["trial_id"]).fillna(0).astype(int)).all()


def _fake(trial_id):
    from types import SimpleNamespace

    return SimpleNamespace(trial_id=trial_id, config={"lr": 0.01}, error_file=None)


def _epoch(epoch, acc):
    return {"epoch": epoch, "train_loss": 1.0, "val_loss": 1.0, "val_acc": acc, "lr": 0.01,
            "epoch_seconds": 1.0, "trainable_params": 10, "diverged": False}


def _study_with(tmp_path, ray_ids):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for ray_id in ray_ids:
        trial = study.ask()
        trial.set_user_attr("ray_trial_id", ray_id)
    return storage


def test_trials_the_budget_stopped_get_pruned_rows_and_optuna_states_and_unstarted_ones_fail(tmp_path):
    from tune_tl.analysis.frame import load_results
    from tune_tl.search.budget import CloseOpenTrials
    from tune_tl.store.results import ParquetSink

    storage = _study_with(tmp_path, ["done", "stopped", "never"])
    sink = ParquetSink(tmp_path, max_epochs=3, flush_seconds=1e9)
    sink.setup()
    closer = CloseOpenTrials(sink, time_budget=0.0, study_storage=storage, study_name="s")
    closer.setup()
    done, stopped, never = _fake("done"), _fake("stopped"), _fake("never")
    sink.on_trial_start(0, [], done)
    for e in (1, 2, 3):
        sink.on_trial_result(0, [], done, _epoch(e, 0.5 + e / 10))
    sink.on_trial_complete(0, [], done)
    sink.on_trial_start(0, [], stopped)
    sink.on_trial_result(0, [], stopped, _epoch(1, 0.4))
    study = optuna.load_study(study_name="s", storage=storage)
    study.tell(study.trials[0].number, 0.8)  # the searcher told the finished trial itself

    closer.on_experiment_end([done, stopped, never])
    sink.on_experiment_end([done, stopped, never])

    res = load_results(tmp_path)
    status = res.trials.set_index("trial_id")["status"].to_dict()
    assert status == {"done": "completed", "stopped": "pruned"}, "the unstarted trial has no row"
    assert res.epochs.groupby("trial_id")["epoch"].count().to_dict() == {"done": 3, "stopped": 1}
    states = {t.user_attrs["ray_trial_id"]: (t.state.name, t.user_attrs.get("tune_tl_status")) for t in study.get_trials()}
    assert states["stopped"] == ("PRUNED", "pruned") and states["never"] == ("FAIL", "not_started")
    assert states["done"][0] == "COMPLETE"


def test_an_experiment_that_ends_before_its_budget_leaves_running_trials_to_resume(tmp_path):
    from tune_tl.search.budget import CloseOpenTrials
    from tune_tl.store.results import ParquetSink

    storage = _study_with(tmp_path, ["running"])
    sink = ParquetSink(tmp_path, max_epochs=3, flush_seconds=1e9)
    sink.setup()
    closer = CloseOpenTrials(sink, time_budget=3600.0, study_storage=storage, study_name="s")
    closer.setup()
    running = _fake("running")
    sink.on_trial_start(0, [], running)
    sink.on_trial_result(0, [], running, _epoch(1, 0.4))
    closer.on_experiment_end([running])  # e.g. the driver was interrupted: resume continues this trial
    sink.on_experiment_end([running])
    assert not (tmp_path / "trials").exists()
    assert optuna.load_study(study_name="s", storage=storage).trials[0].state.name == "RUNNING"
