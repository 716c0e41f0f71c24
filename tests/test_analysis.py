"""Reading results: schema evolution, readers during a running search, merged parts, pandas helpers."""

import threading
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pytest

from tune_tl.analysis.frame import best_trial, leaderboard, load_results, param_summary
from tune_tl.errors import TuneTLError
from tune_tl.store.results import EPOCH_SCHEMA, TRIAL_SCHEMA, ParquetSink, write_table_atomic


def finished(sink, trial_id, accs, **config):
    t = SimpleNamespace(trial_id=trial_id, config=config, error_file=None)
    sink.on_trial_start(0, [], t)
    for epoch, acc in enumerate(accs, start=1):
        sink.on_trial_result(0, [], t, {"epoch": epoch, "val_acc": acc, "train_loss": 1.0, "val_loss": 1.0,
                                        "lr": 0.1, "epoch_seconds": 1.0, "trainable_params": 10, "diverged": False})
    sink.on_trial_complete(0, [], t)
    sink.flush()


def test_rows_round_trip_with_types_and_values_intact(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=2)
    finished(sink, "a", [0.5, 0.75], lr=0.01, head="mlp", head_hidden=32, freeze_blocks=3)
    res = load_results(tmp_path)
    row = res.trials.iloc[0]
    assert (row["trial_id"], row["status"], row["best_val_acc"], row["epochs_run"]) == ("a", "completed", 0.75, 2)
    assert (row["lr"], row["head"], row["head_hidden"], row["freeze_blocks"]) == (0.01, "mlp", 32, 3)
    assert pd.isna(row["momentum"])  # adamw: momentum does not apply
    assert res.epochs["val_acc"].tolist() == [0.5, 0.75]
    assert str(res.epochs["time"].dtype) == "datetime64[ms, UTC]"


def test_an_older_part_without_a_newer_column_reads_as_nulls(tmp_path):
    old = pa.schema([f for f in TRIAL_SCHEMA if f.name not in ("head_dropout", "wall_seconds")])
    write_table_atomic([{"trial_id": "old", "status": "completed", "best_val_acc": 0.9}], old, tmp_path / "trials")
    finished(ParquetSink(tmp_path, max_epochs=1), "new", [0.8], head="mlp", head_dropout=0.2)
    trials = load_results(tmp_path).trials.set_index("trial_id")
    assert list(trials.reset_index().columns) == TRIAL_SCHEMA.names
    assert pd.isna(trials.loc["old", "head_dropout"]) and pd.isna(trials.loc["old", "wall_seconds"])
    assert trials.loc["new", "head_dropout"] == 0.2 and trials.loc["old", "best_val_acc"] == 0.9


def test_parts_are_merged_as_they_accumulate_and_every_row_is_read_once(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=3, flush_rows=5, flush_seconds=1e9, compact_every=8)
    for i in range(100):
        finished(sink, f"t{i:04d}", [0.1, 0.2, 0.3])
        assert len(list((tmp_path / "epochs").glob("part-*.parquet"))) <= 2 + 8 * 2, "small parts are merged every 8 flushes"
    res = load_results(tmp_path)
    assert len(res.trials) == 100 and res.trials["trial_id"].is_unique
    assert len(res.epochs) == 300 and not res.epochs.duplicated(["trial_id", "epoch"]).any()
    sink.on_experiment_end([])
    assert len(list((tmp_path / "trials").glob("part-*.parquet"))) == 1, "one part per table at the end"
    assert len(load_results(tmp_path).epochs) == 300


def test_reading_while_a_search_writes_never_sees_partial_or_doubled_rows(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=2, flush_rows=3, flush_seconds=1e9)
    done = threading.Event()

    def writer():
        for i in range(150):
            finished(sink, f"t{i:04d}", [0.1, 0.2], lr=0.01)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set() or reads < 3:
        res = load_results(tmp_path)  # must never raise, whatever the writer is doing
        assert res.trials["trial_id"].is_unique
        assert not res.epochs.duplicated(["trial_id", "epoch"]).any()
        finished_ids = set(res.trials["trial_id"])
        assert set(res.epochs["trial_id"]) >= finished_ids, "a trial row is only written after its epochs"
        reads += 1
    thread.join()
    assert reads >= 3 and len(load_results(tmp_path).trials) == 150


def results(rows):
    trials = pd.DataFrame(rows)
    for name in TRIAL_SCHEMA.names:
        if name not in trials:
            trials[name] = None
    return SimpleNamespace(trials=trials, epochs=pd.DataFrame(columns=EPOCH_SCHEMA.names), search={})


def test_leaderboard_ranks_comparable_trials_by_accuracy_then_the_rest():
    res = results([
        {"trial_id": "a", "status": "pruned", "best_val_acc": 0.70, "epochs_run": 1, "freeze_blocks": 9, "head": "linear"},
        {"trial_id": "b", "status": "completed", "best_val_acc": 0.90, "epochs_run": 3, "freeze_blocks": 0, "head": "mlp"},
        {"trial_id": "c", "status": "diverged", "best_val_acc": 0.95, "epochs_run": 2, "freeze_blocks": 0, "head": "linear"},
        {"trial_id": "d", "status": "completed", "best_val_acc": 0.80, "epochs_run": 3, "freeze_blocks": 9, "head": "mlp"},
    ])
    assert leaderboard(res)["trial_id"].tolist() == ["b", "d", "a", "c"]
    assert leaderboard(res, top=2).index.tolist() == [1, 2]
    assert best_trial(res)["trial_id"] == "b"
    by_freeze = param_summary(res, "freeze_blocks")
    assert by_freeze.loc[0, "best"] == 0.90 and by_freeze.loc[9, "mean"] == pytest.approx(0.75)
    assert by_freeze.loc[0, "diverged"] == 1 and by_freeze.loc[0, "trials"] == 2
    assert param_summary(res, "head").index[0] == "mlp"


def test_best_trial_and_param_summary_say_what_is_wrong():
    empty = results([{"trial_id": "x", "status": "error", "best_val_acc": None, "epochs_run": 0}])
    with pytest.raises(TuneTLError, match="no completed or pruned trial"):
        best_trial(empty)
    with pytest.raises(TuneTLError, match="'depth' is not a column"):
        param_summary(empty, "depth")
