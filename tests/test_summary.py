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
