"""No lost or doubled rows, one driver per search folder, honest numbers, no secrets in search.json."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tune_tl.cli import main
from tune_tl.errors import TuneTLError
from tune_tl.store.lock import LOCK_FILE, SearchLock
from tune_tl.store.results import EPOCH_SCHEMA, PENDING_PREFIX, TRIAL_SCHEMA, ParquetSink, compact, finish_pending, write_table_atomic
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location
from tune_tl.training.loop import is_diverged

REPO = Path(__file__).resolve().parents[1]


def epoch_rows(trial_id, epochs):
    return [{"trial_id": trial_id, "epoch": e, "val_acc": 0.5, "diverged": False, "epoch_seconds": 0.1,
             "time": 1_700_000_000_000 + e} for e in epochs]


def three_parts(folder: Path) -> list[Location]:
    return [write_table_atomic(epoch_rows(t, [1, 2]), EPOCH_SCHEMA, folder) for t in ("a", "b", "c")]


def killed_after_writing_the_merged_part(folder: Path, parts: list[Location]) -> None:
    """What ``compact`` has done when a kill hits it before any source is deleted."""
    merged = pa.Table.from_pylist([r for p in parts for r in pq.read_table(p.path).to_pylist()], schema=EPOCH_SCHEMA)
    meta = {**EPOCH_SCHEMA.metadata, b"tune_tl.compacted_from": json.dumps([p.name for p in parts]).encode()}
    (Location.parse(folder) / f"{PENDING_PREFIX}part-c1-dead.parquet").write_parquet(merged.replace_schema_metadata(meta))


# -------------------------------------------------------------------------------- compaction


def test_a_kill_after_the_compacted_part_is_written_leaves_no_duplicate_for_readers_or_the_next_compaction(tmp_path):
    folder = tmp_path / "epochs"
    killed_after_writing_the_merged_part(folder, three_parts(folder))

    seen = pd.read_parquet(folder)  # plain pandas, between the kill and anything else
    assert len(seen) == 6 and not seen.duplicated(["trial_id", "epoch"]).any()

    compact(folder, EPOCH_SCHEMA, only_small=False)  # the next compaction finishes the interrupted one first
    after = pd.read_parquet(folder)
    assert len(after) == 6 and not after.duplicated(["trial_id", "epoch"]).any()
    assert [p.name.startswith("part-c") for p in folder.iterdir()] == [True], "one merged part, nothing pending"


def test_a_kill_after_some_sources_are_deleted_is_completed_by_the_next_start(tmp_path):
    folder = tmp_path / "epochs"
    parts = three_parts(folder)
    killed_after_writing_the_merged_part(folder, parts)
    parts[0].delete()  # killed in the middle of deleting the sources

    ParquetSink(tmp_path, max_epochs=2).setup()  # a resumed search's sink
    after = pd.read_parquet(folder)
    assert len(after) == 6 and not after.duplicated(["trial_id", "epoch"]).any()
    assert finish_pending(folder) == 0


def test_a_reader_between_a_compactions_deletes_and_its_rename_still_sees_every_row_once(tmp_path):
    # The window a busy CI machine once hit: sources deleted, the merged part not yet renamed into place.
    folder = tmp_path / "epochs"
    parts = three_parts(folder)
    killed_after_writing_the_merged_part(folder, parts)
    parts[0].delete()
    parts[1].delete()

    seen = SearchRun.open(tmp_path).epochs()  # what report, export and load_results read
    assert sorted(zip(seen["trial_id"], seen["epoch"], strict=True)) == [(t, e) for t in "abc" for e in (1, 2)]


def test_rows_doubled_by_an_older_interrupted_compaction_are_not_baked_in(tmp_path):
    folder = tmp_path / "trials"
    rows = [{"trial_id": t, "status": "completed"} for t in ("a", "b")]
    write_table_atomic(rows, TRIAL_SCHEMA, folder)
    write_table_atomic(rows, TRIAL_SCHEMA, folder, name="part-c0-visible-copy.parquet")  # the old crash: both visible
    compact(folder, TRIAL_SCHEMA, only_small=False)
    assert sorted(pd.read_parquet(folder)["trial_id"]) == ["a", "b"]


def test_compaction_run_twice_changes_nothing(tmp_path):
    folder = tmp_path / "epochs"
    three_parts(folder)
    compact(folder, EPOCH_SCHEMA, only_small=False)
    first = sorted(p.name for p in folder.iterdir())
    compact(folder, EPOCH_SCHEMA, only_small=False)
    assert sorted(p.name for p in folder.iterdir()) == first and len(first) == 1


# -------------------------------------------------------------------------------- honest numbers


def test_a_nan_accuracy_stays_null_and_never_becomes_minus_one(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=2)
    t = SimpleNamespace(trial_id="n", config={}, error_file=None)
    sink.on_trial_start(0, [], t)
    for epoch in (1, 2):
        sink.on_trial_result(0, [], t, {"epoch": epoch, "train_loss": 1.0, "val_acc": float("nan"), "diverged": False})
    sink.on_trial_complete(0, [], t)
    sink.flush()
    row = pd.read_parquet(tmp_path / "trials").iloc[0]
    assert pd.isna(row["best_val_acc"]) and pd.isna(row["best_epoch"]) and pd.isna(row["last_val_acc"])


@pytest.mark.parametrize("loss,first,diverged", [
    (2.5e6, 2.3, True),           # the finite blow-up from the issue
    (float("nan"), 2.3, True),
    (float("inf"), None, True),
    (1.2, 2.3, False),            # ordinary progress
    (3.0, 2.3, False),            # a bad epoch is not a divergence
    (500.0, math.log(10), True),  # the first epoch against ln(classes)
])
def test_divergence_is_judged_against_the_first_epochs_loss(loss, first, diverged):
    assert is_diverged(loss, first) is diverged


@pytest.mark.slow
def test_a_config_error_inside_a_real_trial_ends_it_as_error_at_once_instead_of_being_retried(ray_local, tmp_path):
    from ray import tune

    from tune_tl.search.trainable import run_trial

    tuner = tune.Tuner(
        tune.with_parameters(run_trial, context=None),  # the config fails before the context is used
        param_space={"head": "mlp", "head_dropout": 1.5},
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="cfg", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2)),
    )
    (result,) = tuner.fit()
    assert result.error is None, "raised for Ray to retry"
    assert result.metrics["trial_status"] == "error" and "head_dropout" in result.metrics["error"]
    assert result.metrics["training_iteration"] == 1, "one attempt, one report"


# -------------------------------------------------------------------------------- the lock


def test_a_second_lock_on_a_folder_is_refused_naming_the_holder_and_released_cleanly(tmp_path):
    root = tmp_path / "out" / "s"
    first = SearchLock(root).acquire()
    with pytest.raises(TuneTLError, match=r"in use by another tune-tl search or resume \(pid \d+"):
        SearchLock(root).acquire()
    first.release()
    assert not (tmp_path / "out").exists(), "a lock that created the folder and wrote nothing removes it"
    with SearchLock(root):
        (root / "search.json").write_text("{}")
    assert (root / "search.json").exists() and not (root / LOCK_FILE).exists()


def test_a_search_is_refused_while_another_process_holds_its_folder(tmp_path, capsys):
    root = tmp_path / "out" / "s"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from tune_tl.store.lock import SearchLock
        SearchLock({str(root)!r}).acquire(); print("locked", flush=True); time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(REPO), "PATH": ""})
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["search", "--output", str(tmp_path / "out"), "--name", "s"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "is in use by another tune-tl search" in err[0]
        assert main(["resume", str(root)]) == 2  # not a search yet, and never while it is locked
    finally:
        holder.kill()
        holder.wait()
    assert SearchLock(root).acquire().held, "the kernel drops a killed holder's lock"


# -------------------------------------------------------------------------------- secrets


def test_credentials_in_an_output_uri_are_redacted_in_search_json():
    from tune_tl.store.storage import redact

    uri = "s3://AKIAXXX:supersecret@bucket/prefix?endpoint_override=localhost:9000&secret_key=abc&access_key=AKIAXXX"
    text = redact(uri) + " " + redact(f"--output={uri}")
    assert "supersecret" not in text and "abc" not in text and "AKIAXXX" not in text
    assert "bucket/prefix" in text and "endpoint_override=localhost:9000" in text
    assert redact("results/local") == "results/local"
