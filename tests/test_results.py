"""The Parquet sink: explicit schemas, honest statuses, atomic parts readable without tune_tl."""

from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tune_tl.analysis.frame import load_results
from tune_tl.errors import TuneTLError
from tune_tl.store.results import EPOCH_SCHEMA, TRIAL_SCHEMA, ParquetSink


def trial(trial_id, **config):
    return SimpleNamespace(trial_id=trial_id, config=config, error_file=None)


def result(epoch, val_acc, diverged=False):
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 0.5, "val_acc": val_acc, "scheduled_lr": 0.01,
            "epoch_seconds": 0.1, "trainable_params": 1000, "diverged": diverged, "training_iteration": epoch}


def run(sink, t, accs, diverged_at=None, error=None):
    sink.on_trial_start(0, [], t)
    for epoch, acc in enumerate(accs, start=1):
        sink.on_trial_result(0, [], t, result(epoch, acc, diverged=epoch == diverged_at))
    if error:
        t.error_file = error
        sink.on_trial_error(0, [], t)
    else:
        sink.on_trial_complete(0, [], t)


def test_statuses_follow_what_happened_to_each_trial(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=3)
    run(sink, trial("a", lr=0.1, head="linear"), [0.5, 0.7, 0.8])
    run(sink, trial("b", lr=0.2), [0.3])
    run(sink, trial("c"), [0.2, float("nan")], diverged_at=2)
    err = tmp_path / "error.txt"
    err.write_text("Traceback (most recent call last):\n  ...\nRuntimeError: boom\n")
    run(sink, trial("d"), [0.4], error=str(err))
    sink.on_experiment_end([])

    trials = pd.read_parquet(tmp_path / "trials").set_index("trial_id").sort_index()
    assert trials["status"].to_dict() == {"a": "completed", "b": "pruned", "c": "diverged", "d": "error"}
    assert trials.loc["a", "best_val_acc"] == 0.8 and trials.loc["a", "best_epoch"] == 3
    assert trials.loc["b", "epochs_run"] == 1
    assert trials.loc["d", "error"] == "RuntimeError: boom"
    assert trials.loc["a", "lr"] == 0.1 and trials.loc["a", "head"] == "linear"
    assert pd.isna(trials.loc["b", "head_hidden"]) and trials.loc["b", "batch_size"] == 64  # defaults filled in

    epochs = pd.read_parquet(tmp_path / "epochs")
    assert len(epochs) == 7
    assert epochs.groupby("trial_id")["epoch"].max().to_dict() == {"a": 3, "b": 1, "c": 2, "d": 1}


def test_parts_carry_the_explicit_schema_and_its_version(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=1)
    run(sink, trial("a", lr=0.1), [0.5])
    sink.flush()
    for name, schema in (("epochs", EPOCH_SCHEMA), ("trials", TRIAL_SCHEMA)):
        (part,) = (tmp_path / name).glob("part-*.parquet")
        written = pq.read_schema(part)
        assert written.remove_metadata().equals(schema.remove_metadata())
        assert written.metadata[b"tune_tl.schema_version"] == b"1"
    assert not list(tmp_path.rglob(".*.tmp")), "no temporary files left behind"


def test_epoch_rows_are_flushed_in_batches_not_rewritten(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=10, flush_rows=4, flush_seconds=1e9)
    t = trial("a")
    sink.on_trial_start(0, [], t)
    for epoch in range(1, 10):
        sink.on_trial_result(0, [], t, result(epoch, 0.5))
    parts = sorted((tmp_path / "epochs").glob("part-*.parquet"))
    assert [pq.read_metadata(p).num_rows for p in parts] == [4, 4]  # two flushes of 4; the 9th waits in the buffer
    sink.on_trial_complete(0, [], t)
    sink.on_experiment_end([])
    assert len(load_results(tmp_path).epochs) == 9
    assert len(list((tmp_path / "epochs").glob("part-*.parquet"))) == 1, "compacted at the end"


def test_a_reader_never_sees_a_row_twice_while_parts_are_compacted(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=2, flush_rows=1, compact_every=3)
    for i in range(10):
        run(sink, trial(f"t{i}"), [0.5, 0.6])
        res = load_results(tmp_path)
        assert not res.epochs.duplicated(["trial_id", "epoch"]).any()
        assert len(res.trials) == i + 1
    assert len(list((tmp_path / "trials").glob("part-*.parquet"))) < 10, "small parts were merged"


def test_load_results_on_a_search_with_nothing_written_yet_gives_empty_tables(tmp_path):
    res = load_results(tmp_path)
    assert len(res.trials) == 0 and "status" in res.trials.columns
    assert list(res.epochs.columns) == EPOCH_SCHEMA.names


def test_load_results_names_a_missing_folder(tmp_path):
    with pytest.raises(TuneTLError, match="is not a search results folder"):
        load_results(tmp_path / "missing")


def test_a_resumed_sink_writes_each_trial_epoch_and_ending_once(tmp_path):
    first = ParquetSink(tmp_path, max_epochs=3, flush_seconds=1e9)
    first.setup()
    a, b = trial("a", lr=0.1), trial("b", lr=0.2)
    run(first, a, [0.5, 0.6, 0.7])
    first.on_trial_start(0, [], b)
    first.on_trial_result(0, [], b, result(1, 0.4))
    first.get_state()  # Ray snapshots the experiment: buffered rows reach disk
    first.on_trial_result(0, [], b, result(2, 0.45))  # lost with the driver

    second = ParquetSink(tmp_path, max_epochs=3, flush_seconds=1e9)  # the restored copy
    second.setup()
    second.on_trial_start(0, [], b)
    for epoch, acc in ((1, 0.4), (2, 0.45), (3, 0.5)):  # b re-runs from an older checkpoint
        second.on_trial_result(0, [], b, result(epoch, acc))
    second.on_trial_complete(0, [], b)
    second.on_trial_complete(0, [], a)  # a's ending is replayed too; already written
    second.on_experiment_end([])

    res = load_results(tmp_path)
    assert not res.epochs.duplicated(["trial_id", "epoch"]).any()
    assert res.epochs.groupby("trial_id")["epoch"].apply(sorted).to_dict() == {"a": [1, 2, 3], "b": [1, 2, 3]}
    trials = res.trials.set_index("trial_id")
    assert len(trials) == 2 and trials.loc["b", "status"] == "completed"
    assert trials.loc["b", "best_val_acc"] == 0.5 and trials.loc["b", "epochs_run"] == 3


def test_oom_and_divergence_are_recorded_with_their_reason(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=3)
    sink.setup()
    t = trial("o")
    sink.on_trial_start(0, [], t)
    sink.on_trial_result(0, [], t, result(1, 0.3))
    sink.on_trial_result(0, [], t, {"val_acc": 0.3, "trial_status": "oom", "error": "OutOfMemoryError: CUDA out of memory"})
    sink.on_trial_complete(0, [], t)
    run(sink, trial("d"), [0.2, float("nan")], diverged_at=2)
    sink.flush()
    res = load_results(tmp_path)
    trials = res.trials.set_index("trial_id")
    assert trials.loc["o", "status"] == "oom" and trials.loc["o", "epochs_run"] == 1
    assert trials.loc["o", "error"] == "OutOfMemoryError: CUDA out of memory"
    assert trials.loc["d", "status"] == "diverged" and "non-finite" in trials.loc["d", "error"]
    assert len(res.epochs) == 3, "the oom verdict is not an epoch row"
