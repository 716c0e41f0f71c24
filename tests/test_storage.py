"""Where results live: local folders and object-store URIs behave the same through ``Location``."""

import pickle

import pyarrow as pa
import pytest
from s3_server import LocalS3

from tune_tl.analysis.frame import load_results
from tune_tl.errors import TuneTLError
from tune_tl.store.results import EPOCH_SCHEMA, TRIAL_SCHEMA, compact, write_table_atomic
from tune_tl.store.storage import Location


@pytest.fixture(scope="module")
def s3():
    server = LocalS3()
    yield server
    server.stop()


def test_a_plain_path_and_a_file_uri_are_the_same_local_folder(tmp_path):
    a = Location.parse(tmp_path / "out")
    b = Location.parse(f"file://{tmp_path}/out")
    assert a.is_local and b.is_local and a == b
    assert a.local_path == tmp_path / "out"
    assert str(a / "demo") == str(tmp_path / "out" / "demo")


def test_relative_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Location.parse("results").local_path == tmp_path / "results"


def test_an_unknown_uri_scheme_is_one_clear_error():
    with pytest.raises(TuneTLError, match="nosuch://bucket/x.*pyarrow cannot open"):
        Location.parse("nosuch://bucket/x")


def test_local_writes_are_whole_files_and_leave_no_temporaries(tmp_path):
    file = Location.parse(tmp_path) / "deep" / "search.json"
    file.write_text("{}")
    file.write_text('{"a": 1}')
    assert file.read_text() == '{"a": 1}'
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["search.json"]


def test_an_s3_location_names_itself_without_its_query_and_survives_pickling(s3):
    root = Location.parse(s3.uri("bucket-a/results")) / "demo"
    assert not root.is_local and str(root) == "s3://bucket-a/results/demo"
    assert root.name == "demo" and str(root.parent) == "s3://bucket-a/results"
    assert pickle.loads(pickle.dumps(root)) == root
    with pytest.raises(TuneTLError, match="not on the local filesystem"):
        root.local_path  # noqa: B018 - the property access itself raises


def test_results_written_to_s3_read_back_with_load_results_and_pandas(s3):
    s3.bucket("bucket-b")
    root = Location.parse(s3.uri("bucket-b/results/demo"))
    for i in range(3):
        write_table_atomic([{"trial_id": f"t{i}", "status": "completed", "best_val_acc": i / 10}], TRIAL_SCHEMA, root / "trials")
    write_table_atomic([{"trial_id": "t0", "epoch": 1, "val_acc": 0.5}], EPOCH_SCHEMA, root / "epochs")
    (root / "search.json").write_text('{"name": "demo"}')
    compact(root / "trials", TRIAL_SCHEMA, only_small=False)

    assert len([f for f in s3.listing("bucket-b/results/demo/trials")]) == 1, "compaction leaves one part"
    res = load_results(s3.uri("bucket-b/results/demo"))
    assert sorted(res.trials["trial_id"]) == ["t0", "t1", "t2"]
    assert res.epochs["val_acc"].tolist() == [0.5]
    assert res.search == {"name": "demo"}

    import pandas as pd  # pandas opens s3:// through pyarrow too, no s3fs needed

    assert len(pd.read_parquet(s3.uri("bucket-b/results/demo/trials"))) == 3


def test_load_results_on_a_missing_s3_folder_names_it(s3):
    s3.bucket("bucket-c")
    with pytest.raises(TuneTLError, match="s3://bucket-c/nothing is not a search results folder"):
        load_results(s3.uri("bucket-c/nothing"))


def test_a_table_round_trips_through_write_parquet(s3):
    s3.bucket("bucket-d")
    part = Location.parse(s3.uri("bucket-d/x")) / "t.parquet"
    part.write_parquet(pa.table({"a": [1, 2]}))
    assert part.is_file() and part.exists() and not part.is_dir()
    assert [p.name for p in part.parent.files(suffix=".parquet")] == ["t.parquet"]
    part.delete()
    assert not part.exists()
