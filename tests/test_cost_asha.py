"""Cost-aware ASHA and PASHA decide on tiny synthetic curves, driven like Ray drives them; cost-aware ASHA on predicted cost."""

import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
from ray.tune.schedulers import ASHAScheduler

from tune_tl.config import load_space
from tune_tl.config.params import TrialConfig
from tune_tl.config.spec import cost_rungs
from tune_tl.search.cost_asha import CostASHA
from tune_tl.search.pasha import PASHA
from tune_tl.search.schedulers import SCHEDULERS, ReplayASHA, make_scheduler
from tune_tl.store.results import ParquetSink
from tune_tl.store.scheduler_record import recorded_rungs
from tune_tl.store.search_run import SearchRun
from tune_tl.training.cost_model import CostModel, recorded_cost_model


def result(epoch, acc, seconds):
    return {"epoch": epoch, "train_loss": 1.0, "val_loss": 1.0, "val_acc": acc, "lr": 0.1,
            "epoch_seconds": seconds, "trainable_params": 10, "diverged": False}


def run(scheduler, trial_id, curve, seconds=1.0, sink=None, config=None):
    """Feed one trial's curve; returns the epochs it ran before the scheduler stopped it."""
    trial = SimpleNamespace(trial_id=trial_id, config=config or {}, error_file=None)
    scheduler.on_trial_add(None, trial)
    if sink:
        sink.on_trial_start(0, [], trial)
    for epoch, acc in enumerate(curve, start=1):
        r = result(epoch, acc, seconds if np.isscalar(seconds) else seconds[epoch - 1])
        if sink:
            sink.on_trial_result(0, [], trial, r)
        if scheduler.on_trial_result(None, trial, r) == "STOP" or epoch == len(curve):
            scheduler.on_trial_complete(None, trial, r)
            if sink:
                sink.on_trial_complete(0, [], trial)
            return epoch


# A backbone of three blocks at 32 px with plain-number FLOP counts: a real CostModel, no torch needed.
MODEL = CostModel({"toy": {32: (1e6, 2e6, 3e6)}}, {"toy": 16}, num_classes=10, train_images=100, val_images=20)
FT = {"backbone": "toy", "resolution": 32, "freeze_policy": "full"}
PROBE = {"backbone": "toy", "resolution": 32, "freeze_policy": "head_only"}
# Crossing curves: a whole-model fine-tune starts low and finishes high; a linear probe leads after one
# epoch and plateaus.
FINETUNE_CURVE = [0.40, 0.80, 0.92, 0.96, 0.97, 0.98]
PROBE_CURVE = [0.85, 0.86, 0.87, 0.87, 0.88, 0.88]


def cost_asha(root, max_epochs=6, **kw):
    return CostASHA(root, metric="val_acc", mode="max", max_epochs=max_epochs, grace_period=1, reduction_factor=3, cost_model=MODEL, **kw)


def test_cost_asha_knows_its_unit_and_rungs_before_any_trial_a_fine_tune_epoch_of_the_model(tmp_path):
    cost = cost_asha(tmp_path, max_epochs=9)
    unit = MODEL.fine_tune_epoch()
    assert cost.unit == unit and cost.rungs == [unit, 3 * unit, 9 * unit]
    state = json.loads((tmp_path / "scheduler.json").read_text())
    assert state["unit"] == unit and state["rungs"] == cost.rungs and CostModel.from_dict(state["cost_model"]) == MODEL
    assert recorded_rungs(SearchRun(tmp_path)) == cost.rungs
    assert recorded_cost_model(SearchRun(tmp_path)) == (MODEL, unit)


def test_epoch_asha_stops_a_fine_tune_that_trails_probes_at_epoch_one_but_cost_asha_keeps_it(tmp_path):
    asha = ReplayASHA(tmp_path, time_attr="epoch", metric="val_acc", mode="max", max_t=6, grace_period=1, reduction_factor=3)
    cost = cost_asha(tmp_path)
    assert run(asha, "ft0", FINETUNE_CURVE) == 6 and run(cost, "ft0", FINETUNE_CURVE, config=FT) == 6
    for i in range(3):
        run(asha, f"lp{i}", PROBE_CURVE)
        run(cost, f"lp{i}", PROBE_CURVE, config=PROBE)
    assert run(asha, "ft1", FINETUNE_CURVE) == 1, "epoch rungs compare the fine-tune's first epoch with the probes'"
    assert run(cost, "ft1", FINETUNE_CURVE, config=FT) == 6, "the probes never cost a fine-tune epoch, so they never set its cutoff"


def test_cost_asha_still_stops_a_trial_worse_than_others_at_equal_cost(tmp_path):
    cost = cost_asha(tmp_path)
    for i in range(3):
        assert run(cost, f"ft{i}", FINETUNE_CURVE, config=FT) == 6
    assert run(cost, "bad", [0.10] * 6, config=FT) == 1
    # A cheap trial is compared once it has cost a rung's worth: a frozen-prefix epoch here is predicted at 0.56 units.
    prefix = {**FT, "freeze_policy": "prefix", "freeze_blocks": 2}
    assert MODEL.epoch_cost(TrialConfig.from_dict(prefix), 1) / cost.unit == pytest.approx(0.56, abs=0.01)
    assert run(cost, "cheap-bad", [0.2] * 6, config=prefix) == 2


def test_cost_asha_decides_the_same_however_long_the_epochs_took(tmp_path):
    rng = np.random.default_rng(0)
    curves = [(f"t{i}", np.sort(rng.uniform(0, 1, 6)), FT if i % 2 else PROBE) for i in range(8)]
    decisions = []
    for attempt in range(2):
        cost = cost_asha(tmp_path / str(attempt))
        # Busy-machine noise: each run measures different seconds for the same epochs.
        decisions.append([run(cost, name, curve, rng.uniform(0.1, 30, 6), config=config) for name, curve, config in curves])
    assert decisions[0] == decisions[1] and min(decisions[0]) < 6, "some trials were stopped, at the same epochs both times"


def test_resumed_cost_asha_rebuilds_the_same_clocks_and_rungs_from_parquet_and_the_restored_configs(tmp_path):
    live = cost_asha(tmp_path)
    sink = ParquetSink(tmp_path, max_epochs=6, flush_seconds=1e9)
    sink.setup()
    run(live, "ft0", FINETUNE_CURVE, 10.0, sink, config=FT)
    for i in range(3):
        run(live, f"lp{i}", PROBE_CURVE, 1.0, sink, config=PROBE)
    run(live, "ft1", [0.1] * 6, 10.0, sink, config=FT)
    # A trial still running when the driver dies: epochs on disk, no trials row; Ray restores its config.
    running = SimpleNamespace(trial_id="ft2", config=FT, error_file=None)
    live.on_trial_add(None, running)
    sink.on_trial_start(0, [], running)
    for epoch in (1, 2):
        r = result(epoch, 0.9, 10.0)
        sink.on_trial_result(0, [], running, r)
        live.on_trial_result(None, running, r)
    sink.flush()

    restored = cost_asha(tmp_path)
    for trial_id, config in [("ft0", FT), ("lp0", PROBE), ("lp1", PROBE), ("lp2", PROBE), ("ft1", FT), ("ft2", FT)]:
        restored.on_trial_add(None, SimpleNamespace(trial_id=trial_id, config=config))  # as Ray's resume adds them, first
    restored.on_trial_result(None, running, result(3, 0.91, 10.0))  # the first result triggers the replay
    live.on_trial_result(None, running, result(3, 0.91, 10.0))
    assert restored.unit == live.unit
    assert [(m, dict(r)) for m, r in restored._brackets[0]._rungs] == [(m, dict(r)) for m, r in live._brackets[0]._rungs]
    assert restored._clock == live._clock and restored._clock["ft0"] == (6, 6 * live.unit)


def test_without_a_cost_model_cost_asha_learns_its_unit_from_the_first_trial_in_measured_seconds(tmp_path):
    cost = CostASHA(tmp_path, metric="val_acc", mode="max", max_epochs=9)
    first, second = SimpleNamespace(trial_id="a", config={}), SimpleNamespace(trial_id="b", config={})
    cost.on_trial_add(None, first)
    cost.on_trial_add(None, second)
    assert cost.on_trial_result(None, second, result(1, 0.5, 1.0)) == "CONTINUE"
    assert cost.unit is None
    cost.on_trial_result(None, first, result(1, 0.5, 4.0))
    assert cost.unit == 4.0 and cost.rungs == [4.0, 12.0, 36.0]
    assert json.loads((tmp_path / "scheduler.json").read_text())["unit_seconds"] == 4.0
    cost.on_trial_result(None, first, result(1, 0.5, 4.0))  # a repeated final result counts once
    cost.on_trial_result(None, first, result(2, 0.5, 4.0))
    assert cost._clock["a"] == (2, 8.0)


def test_a_cost_asha_pickled_before_the_cost_model_resumes_on_measured_seconds(tmp_path):
    old = CostASHA(tmp_path, metric="val_acc", mode="max", max_epochs=6)
    state = {k: v for k, v in old.__dict__.items() if k not in ("cost_model", "_configs")}  # what an older tune_tl pickled
    restored = pickle.loads(pickle.dumps(old))
    restored.__dict__.clear()
    restored.__setstate__(state)
    assert run(restored, "a", [0.5, 0.6], 4.0) == 2 and restored.unit == 4.0 and restored.cost_model is None


def test_recorded_rungs_are_empty_before_they_are_recorded_and_rebuilt_from_a_unit_only_file(tmp_path):
    assert recorded_rungs(SearchRun(tmp_path)) == []
    (tmp_path / "search.json").write_text(json.dumps({"budget": {"grace_period": 1, "reduction_factor": 3, "max_epochs": 10}}))
    (tmp_path / "scheduler.json").write_text(json.dumps({"scheduler": "cost-asha", "unit_seconds": 20.0}))  # an older tune_tl
    assert recorded_rungs(SearchRun(tmp_path)) == [20.0, 60.0, 180.0]
    assert recorded_cost_model(SearchRun(tmp_path)) is None


@pytest.mark.parametrize("grace, factor, max_epochs", [(1, 3, 9), (2, 2, 8), (1, 2, 4), (1, 3, 10), (3, 2, 20), (1, 3, 243), (1, 10, 1000)])
def test_cost_rungs_with_a_unit_of_one_epoch_are_the_rungs_rays_asha_builds(grace, factor, max_epochs):
    ray = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=max_epochs, grace_period=grace, reduction_factor=factor)
    assert cost_rungs(1, grace, max_epochs, factor) == sorted(m for m, _ in ray._brackets[0]._rungs)


def test_cost_rungs_count_does_not_depend_on_the_unit_rounding():
    assert len(cost_rungs(0.1, 1, 6, 3)) == len(cost_rungs(1, 1, 6, 3)) == 2
    assert len(cost_rungs(0.7, 1, 9, 3)) == 3


def test_pasha_stops_at_the_second_rung_while_rankings_agree_and_grows_when_they_disagree():
    pasha = PASHA(metric="val_acc", mode="max", max_epochs=9, grace_period=1, reduction_factor=3)
    assert pasha.levels == [1, 3, 9] and pasha.max_resource == 3
    assert run(pasha, "a", [0.5, 0.6, 0.7] + [0.8] * 6, 1.0) == 3
    assert run(pasha, "b", [0.6, 0.7, 0.8] + [0.9] * 6, 1.0) == 3  # b leads at epochs 1 and 3: agree
    assert pasha.max_resource == 3
    # c trails both at epoch 1 but leads at epoch 3: the rankings disagree, so the budget grows.
    assert run(pasha, "c", [0.58, 0.7, 0.95] + [0.96] * 6, 1.0) == 9
    assert pasha.max_resource == 9


def test_pasha_soft_ranking_ignores_swaps_within_epsilon():
    pasha = PASHA(metric="val_acc", mode="max", max_epochs=9, epsilon=0.05)
    run(pasha, "a", [0.50, 0.6, 0.70] + [0.8] * 6, 1.0)
    run(pasha, "b", [0.52, 0.6, 0.69] + [0.8] * 6, 1.0)  # a swap of 0.01–0.02: a tie
    assert pasha.max_resource == 3


@pytest.mark.parametrize("name", SCHEDULERS)
def test_make_scheduler_builds_every_named_scheduler_for_the_default_space(name, tmp_path):
    scheduler = make_scheduler(name, load_space(), tmp_path)
    assert scheduler.__class__.__name__ == {"cost-asha": "CostASHA", "asha": "ReplayASHA", "pasha": "PASHA", "fifo": "FIFOScheduler"}[name]


def test_make_scheduler_rejects_an_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("hyperband", load_space(), tmp_path)
