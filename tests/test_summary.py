"""The summary a search prints at its end."""

import math
import time

import pytest
import torch

from tests.test_admission import LITE, cost_model
from tune_tl.config import load_space
from tune_tl.config.params import TrialConfig
from tune_tl.config.space import parse_space_text
from tune_tl.search.plan import plan_for
from tune_tl.search.summary import FineTuneNeed, SearchSummary, fine_tune_need, format_summary, summarize
from tune_tl.store.results import epoch_row, trial_row, write_table_atomic
from tune_tl.store.schema import EPOCH_SCHEMA, TRIAL_SCHEMA
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location
from tune_tl.store.trial_record import TrialRecord
from tune_tl.training.cost_model import cheapest_fine_tune


def test_the_best_trials_epoch_prints_as_a_whole_number_when_the_table_holds_it_as_a_float(tmp_path):
    # A trial stopped before its first epoch has no best_epoch, so pandas reads the column as floats.
    best = {"trial_id": "probe-efficientnet_lite2-260", "best_val_acc": 0.9804, "best_epoch": 1.0, "status": "completed",
            "probe": True, "backbone": "efficientnet_lite2", "resolution": 260}
    counts = {"completed": 1, "pruned": 5, "diverged": 0, "oom": 0, "error": 0}
    text = format_summary(SearchSummary(Location.parse(tmp_path), counts, best, probes=3))
    assert "Best trial probe-efficientnet_lite2-260: val_acc 0.9804 (epoch 1, completed)" in text
    assert "Search finished: 3 linear probe(s), 1 completed, 5 pruned" in text


def _write(root, rows_by_trial):
    run = SearchRun(root)
    for trial_id, probe in rows_by_trial:
        record = TrialRecord()
        record.add_epoch(1, 0.9, diverged=False)
        config = {"backbone": LITE, "resolution": 32, "freeze_policy": "head_only" if probe else "full"}
        write_table_atomic([epoch_row(trial_id, {"epoch": 1, "val_acc": 0.9, "epoch_seconds": 5.0}, time.time(), probe=probe)],
                           EPOCH_SCHEMA, run.epochs_dir)
        write_table_atomic([trial_row(trial_id, config, record, "completed" if probe else "pruned", None, 5.0, probe=probe)],
                           TRIAL_SCHEMA, run.trials_dir)


def test_a_search_whose_budget_ended_before_any_fine_tune_epoch_says_so_and_what_budget_one_epoch_needs(tmp_path):
    root = Location.parse(tmp_path)
    _write(root, [("probe-efficientnet_lite0-32", True)])
    model = cost_model()
    probes = [{"backbone": LITE, "resolution": 32, "seconds": 10.0}]
    need = fine_tune_need(plan_for(load_space(), 9, cost_model=model), probes, before_seconds=40.0, trial_cpus=1)
    summary = summarize(root, 0, True, need)
    text = format_summary(summary)
    assert not summary.fine_tuned
    assert "The search could not fine-tune: the time budget ended before any fine-tune epoch finished." in text
    cfg, flops = cheapest_of(model, load_space())
    probe_work = model.epoch_cost(TrialConfig.from_dict({"backbone": LITE, "resolution": 32, "freeze_policy": "head_only"}), 1)
    seconds = flops * 10.0 / probe_work * torch.get_num_threads()  # the probe ran on the driver's threads, a trial on one CPU
    assert need.epoch_seconds == pytest.approx(seconds)
    assert f"({LITE} at 32 px, 8 of 9 blocks frozen) is predicted to take {seconds:.0f} s after the 40 s" in text
    assert f"--time-budget {math.ceil(40 + seconds)} or more" in text


def test_a_search_that_fine_tuned_an_epoch_says_nothing_about_fine_tuning(tmp_path):
    root = Location.parse(tmp_path)
    _write(root, [("probe-efficientnet_lite0-32", True), ("t0", False)])
    summary = summarize(root, 0, True, FineTuneNeed("x", 1.0, 1.0))
    assert summary.fine_tuned and summary.fine_tune_need is None
    assert "could not fine-tune" not in format_summary(summary)


def test_the_cheapest_fine_tune_of_a_space_trains_as_few_blocks_as_its_policies_allow():
    model = cost_model()
    cfg, _ = cheapest_of(model, load_space())  # the default space: prefix up to every block frozen
    assert (cfg.freeze_policy, cfg.freeze_blocks) == ("prefix", 8)
    only_full = parse_space_text(f"backbone: {{name: {LITE}}}\nparams: {{resolution: 32, freeze_policy: [head_only, full]}}\n", "s.yaml")
    assert cheapest_of(model, only_full)[0].freeze_policy == "full"
    frozen = parse_space_text(f"backbone: {{name: {LITE}}}\nparams: {{resolution: 32, freeze_policy: head_only}}\n", "s.yaml")
    assert cheapest_of(model, frozen) is None


def cheapest_of(model, spec):
    """``cheapest_fine_tune`` of ``spec``'s space, resolved as a search's plan resolves it."""
    return cheapest_fine_tune(model, plan_for(spec, 9).sub_spaces, spec.source)
BEST = {"trial_id": "ab12cd34", "best_val_acc": 0.913, "best_epoch": 3, "status": "completed", "resolution": 224}
COUNTS = {"completed": 4, "pruned": 2, "diverged": 0, "oom": 0, "error": 0}


def test_the_summary_prints_the_test_figure_next_to_the_optimistic_val_one(tmp_path):
    test = {"trial_id": "ab12cd34", "test_acc": 0.845, "test_images": 400, "val_acc": 0.913}
    text = format_summary(SearchSummary(Location.parse(tmp_path), COUNTS, BEST, probes=3, ranked_trials=9, test=test))
    assert "  val 0.9130 (best of 9 trials: optimistic) · test 0.8450 on 400 images (never used to choose)" in text
    assert "no test split" not in text


def test_without_a_test_split_the_summary_says_the_val_figure_is_optimistic_and_how_to_get_an_honest_one(tmp_path):
    text = format_summary(SearchSummary(Location.parse(tmp_path), COUNTS, BEST, ranked_trials=6))
    assert ("val 0.9130 (best of 6 trials: optimistic); no test split for an honest figure: "
            "put held-out images in <data>/test/<class>/ (scored once, never to choose)") in text


def test_the_summary_names_the_shipped_trial_when_a_recheck_shipped_another_than_the_best(tmp_path):
    test = {"trial_id": "ee11ff22", "test_acc": 0.8, "test_images": 50, "val_acc": 0.9}
    text = format_summary(SearchSummary(Location.parse(tmp_path), COUNTS, BEST, ranked_trials=6, test=test))
    assert "test 0.8000 on 50 images of the shipped trial ee11ff22 (val 0.9000) (never used to choose)" in text


def test_the_summary_prints_the_ensemble_with_its_members_and_weights(tmp_path):
    ensemble = {"members": [{"trial_id": "probe-a-224", "weight": 0.5}, {"trial_id": "ab12cd34", "weight": 0.5}],
                "val_acc": 0.93, "best_single_val_acc": 0.913}
    text = format_summary(SearchSummary(Location.parse(tmp_path), COUNTS, BEST, ranked_trials=6, ensemble=ensemble))
    assert ("Ensemble (val 0.9300 vs best single 0.9130, chosen on val: optimistic too): probe-a-224 0.50, ab12cd34 0.50; "
            "tune-tl export ships it (a point or more above the best single on val; --single exports that one)") in text
    close = {**ensemble, "val_acc": 0.92}  # less than a point above: the best single is still what export ships
    text = format_summary(SearchSummary(Location.parse(tmp_path), COUNTS, BEST, ranked_trials=6, ensemble=close))
    assert "ab12cd34 0.50; tune-tl export ships the best single (--ensemble exports this)" in text
    single = {"members": [{"trial_id": "ab12cd34", "weight": 1.0}], "val_acc": 0.913, "best_single_val_acc": 0.913}
    text = format_summary(SearchSummary(Location.parse(tmp_path), COUNTS, BEST, ranked_trials=6, ensemble=single))
    assert "Ensemble: none better on val than the best single member (ab12cd34 1.00)" in text
