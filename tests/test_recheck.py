"""After --recheck, the winner is the config with the best mean over seeds, not the luckiest single run."""

import pytest
from synthetic import write_synthetic

from tune_tl.analysis.frame import load_results
from tune_tl.store.ranking import recheck_table, shipped_row
from tune_tl.store.results import ParquetSink, write_table_atomic
from tune_tl.store.schema import RECHECK_SCHEMA
from tune_tl.store.search_run import SearchRun


def test_the_winner_by_mean_over_seeds_replaces_a_lucky_single_run(tmp_path):
    write_synthetic(ParquetSink(tmp_path, max_epochs=2), 6, 2)
    run = SearchRun(tmp_path)
    res = load_results(run)
    lucky = shipped_row(res.trials, run.recheck())["trial_id"]  # not rechecked yet: the single best run
    assert recheck_table(run.trials(), run.recheck()).empty
    steady = next(t for t in res.trials["trial_id"] if t != lucky)
    rows = [{"trial_id": lucky, "seed": s, "best_val_acc": 0.10, "best_epoch": 1} for s in (1, 2)]
    rows += [{"trial_id": steady, "seed": s, "best_val_acc": 0.99, "best_epoch": 2} for s in (1, 2)]
    write_table_atomic(rows, RECHECK_SCHEMA, run.recheck_dir)

    table = recheck_table(run.trials(), run.recheck())
    assert table["trial_id"].tolist() == [steady, lucky] and (table["runs"] == 3).all()
    first = res.trials.set_index("trial_id").loc[steady, "best_val_acc"]
    assert table["mean"].iloc[0] == pytest.approx((first + 0.99 + 0.99) / 3)
    assert table["sd"].iloc[0] > 0
    assert shipped_row(res.trials, run.recheck())["trial_id"] == steady
