"""Cost-aware ASHA and PASHA decide on tiny synthetic curves, driven like Ray drives them."""

import json
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler

from tune_tl.config import load_space
from tune_tl.search.cost_asha import TRAINING_SECONDS, CostASHA, cost_rungs, recorded_rungs
from tune_tl.search.pasha import PASHA
from tune_tl.search.schedulers import SCHEDULERS, ReplayASHA, make_scheduler
from tune_tl.store.results import ParquetSink
from tune_tl.store.search_run import SearchRun


def result(epoch, acc, seconds):
    return {"epoch": epoch, "train_loss": 1.0, "val_loss": 1.0, "val_acc": acc, "lr": 0.1,
            "epoch_seconds": seconds, "trainable_params": 10, "diverged": False}


def run(scheduler, trial_id, curve, seconds, sink=None):
    """Feed one trial's curve; returns the epochs it ran before the scheduler stopped it."""
    trial = SimpleNamespace(trial_id=trial_id, config={}, error_file=None)
    scheduler.on_trial_add(None, trial)
    if sink:
        sink.on_trial_start(0, [], trial)
    for epoch, acc in enumerate(curve, start=1):
        r = result(epoch, acc, seconds)
        if sink:
            sink.on_trial_result(0, [], trial, r)
        if scheduler.on_trial_result(None, trial, r) == "STOP" or epoch == len(curve):
            scheduler.on_trial_complete(None, trial, r)
            if sink:
                sink.on_trial_complete(0, [], trial)
            return epoch


# Crossing curves: a whole-model fine-tune (10 s/epoch) starts low and finishes high; a linear
# probe (1 s/epoch) leads after one epoch and plateaus.
FINETUNE = [0.40, 0.80, 0.92, 0.96, 0.97, 0.98]
PROBE = [0.85, 0.86, 0.87, 0.87, 0.88, 0.88]


def test_epoch_asha_stops_a_fine_tune_that_trails_probes_at_epoch_one_but_cost_asha_keeps_it(tmp_path):
    asha = ReplayASHA(tmp_path, time_attr="epoch", metric="val_acc", mode="max", max_t=6, grace_period=1, reduction_factor=3)
    cost = CostASHA(tmp_path, metric="val_acc", mode="max", max_epochs=6, grace_period=1, reduction_factor=3)
    # The first trial (the textbook fine-tune) sets cost-ASHA's unit: 10 s.
    assert run(asha, "ft0", FINETUNE, 10.0) == 6 and run(cost, "ft0", FINETUNE, 10.0) == 6
    for i in range(3):
        run(asha, f"lp{i}", PROBE, 1.0)
        run(cost, f"lp{i}", PROBE, 1.0)
    assert run(asha, "ft1", FINETUNE, 10.0) == 1, "epoch rungs compare the fine-tune's first epoch with the probes'"
    assert run(cost, "ft1", FINETUNE, 10.0) == 6, "the probes never spent 10 s, so they never set its cutoff"
    assert cost.unit == 10.0 and cost.rungs == [10.0, 30.0]


def test_cost_asha_still_stops_a_trial_worse_than_others_at_equal_seconds(tmp_path):
    cost = CostASHA(tmp_path, metric="val_acc", mode="max", max_epochs=6, grace_period=1, reduction_factor=3)
    for i in range(3):
        assert run(cost, f"ft{i}", FINETUNE, 10.0) == 6
    assert run(cost, "bad", [0.10] * 6, 10.0) == 1
    # A cheap trial is compared once it has spent a rung's seconds: 10 epochs of 1 s reach the 10 s rung.
    assert run(cost, "cheap-bad", [0.2] * 12, 1.0) == 10


def test_cost_asha_learns_its_unit_from_the_first_trial_even_when_another_reports_first(tmp_path):
    cost = CostASHA(tmp_path, metric="val_acc", mode="max", max_epochs=6)
    first, second = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    cost.on_trial_add(None, first)
    cost.on_trial_add(None, second)
    assert cost.on_trial_result(None, second, result(1, 0.5, 1.0)) == "CONTINUE"
    assert cost.unit is None
    cost.on_trial_result(None, first, result(1, 0.5, 8.0))
    assert cost.unit == 8.0
    assert (tmp_path / "scheduler.json").is_file()


def test_cost_asha_counts_a_repeated_final_result_once(tmp_path):
    cost = CostASHA(tmp_path, metric="val_acc", mode="max", max_epochs=6)
    t = SimpleNamespace(trial_id="a")
    cost.on_trial_add(None, t)
    cost.on_trial_result(None, t, result(1, 0.5, 4.0))
    assert cost._timed("a", result(1, 0.5, 4.0))[TRAINING_SECONDS] == 4.0
    assert cost._timed("a", result(2, 0.5, 4.0))[TRAINING_SECONDS] == 8.0


def test_resumed_cost_asha_rebuilds_the_same_unit_clocks_and_rungs_from_parquet(tmp_path):
    live = CostASHA(tmp_path, metric="val_acc", mode="max", max_epochs=6)
    sink = ParquetSink(tmp_path, max_epochs=6, flush_seconds=1e9)
    sink.setup()
    run(live, "ft0", FINETUNE, 10.0, sink)
    for i in range(3):
        run(live, f"lp{i}", PROBE, 1.0, sink)
    run(live, "ft1", [0.1] * 6, 10.0, sink)
    sink.flush()

    restored = CostASHA(tmp_path, metric="val_acc", mode="max", max_epochs=6)
    restored.on_trial_add(None, SimpleNamespace(trial_id="next"))  # triggers the replay
    assert restored.unit == live.unit
    assert [(m, dict(r)) for m, r in restored._brackets[0]._rungs] == [(m, dict(r)) for m, r in live._brackets[0]._rungs]
    assert restored._clock["ft0"] == (6, 60.0)


def test_cost_asha_records_its_unit_and_rungs_in_scheduler_json_when_it_learns_them(tmp_path):
    cost = CostASHA(tmp_path, metric="val_acc", mode="max", max_epochs=9, grace_period=1, reduction_factor=3)
    run(cost, "a", [0.5] * 2, 4.0)
    state = json.loads((tmp_path / "scheduler.json").read_text())
    assert state["unit_seconds"] == 4.0 and state["rungs"] == cost.rungs == [4.0, 12.0, 36.0]
    assert recorded_rungs(SearchRun(tmp_path)) == cost.rungs


def test_recorded_rungs_are_empty_before_the_unit_is_learned_and_rebuilt_from_a_unit_only_file(tmp_path):
    assert recorded_rungs(SearchRun(tmp_path)) == []
    (tmp_path / "search.json").write_text(json.dumps({"budget": {"grace_period": 1, "reduction_factor": 3, "max_epochs": 10}}))
    (tmp_path / "scheduler.json").write_text(json.dumps({"scheduler": "cost-asha", "unit_seconds": 20.0}))  # an older tune_tl
    assert recorded_rungs(SearchRun(tmp_path)) == [20.0, 60.0, 180.0]


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
