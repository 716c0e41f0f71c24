"""The summary a search prints at its end."""

from tune_tl.search.summary import SearchSummary, format_summary
from tune_tl.store.storage import Location


def test_the_best_trials_epoch_prints_as_a_whole_number_when_the_table_holds_it_as_a_float(tmp_path):
    # A trial stopped before its first epoch has no best_epoch, so pandas reads the column as floats.
    best = {"trial_id": "probe-efficientnet_lite2-260", "best_val_acc": 0.9804, "best_epoch": 1.0, "status": "completed",
            "probe": True, "backbone": "efficientnet_lite2", "resolution": 260}
    counts = {"completed": 1, "pruned": 5, "diverged": 0, "oom": 0, "error": 0}
    text = format_summary(SearchSummary(Location.parse(tmp_path), counts, best, probes=3))
    assert "Best trial probe-efficientnet_lite2-260: val_acc 0.9804 (epoch 1, completed)" in text
    assert "Search finished: 3 linear probe(s), 1 completed, 5 pruned" in text


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
    assert "Ensemble (val 0.9300 vs best single 0.9130, chosen on val: optimistic too): probe-a-224 0.50, ab12cd34 0.50" in text
    single = {"members": [{"trial_id": "ab12cd34", "weight": 1.0}], "val_acc": 0.913, "best_single_val_acc": 0.913}
    text = format_summary(SearchSummary(Location.parse(tmp_path), COUNTS, BEST, ranked_trials=6, ensemble=single))
    assert "Ensemble: none better on val than the best single member (ab12cd34 1.00)" in text
