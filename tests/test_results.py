"""The Parquet sink: explicit schemas, honest statuses, atomic parts readable without tune_tl."""

from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tune_tl.analysis import load_results
from tune_tl.errors import TuneTLError
from tune_tl.results import EPOCH_SCHEMA, TRIAL_SCHEMA, ParquetSink


def trial(trial_id, **config):
    return SimpleNamespace(trial_id=trial_id, config=config, error_file=None)


def result(epoch, val_acc, diverged=False):
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 0.5, "val_acc": val_acc, "lr": 0.01,
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
    assert [pq.read_metadata(p).num_rows for p in parts] == [8]  # two flushes of 4, merged; the 9th waits
    sink.on_trial_complete(0, [], t)
    assert len(load_results(tmp_path).epochs) == 9


def test_load_results_on_a_search_with_nothing_written_yet_gives_empty_tables(tmp_path):
    res = load_results(tmp_path)
    assert len(res.trials) == 0 and "status" in res.trials.columns
    assert list(res.epochs.columns) == EPOCH_SCHEMA.names


def test_load_results_names_a_missing_folder(tmp_path):
    with pytest.raises(TuneTLError, match="is not a search results folder"):
        load_results(tmp_path / "missing")
