"""Hostile results and model folders: a crafted search never runs code, secrets never reach a file, a damaged
model folder or image is one line, a damaged Parquet part is set aside, and a refused command changes nothing.

Most cases read the session's ``finished_search`` (a copy, ``search_copy``, where a case writes); the credentials
case runs one tiny search against the local S3 server (tests/s3_server.py).
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from s3_server import LocalS3
from spaces import FINISHED, write_tiny_space

from tune_tl.analysis.dashboard import study_copy
from tune_tl.analysis.model_folder import save_model_folder
from tune_tl.cli import main
from tune_tl.errors import TuneTLError
from tune_tl.search.recheck import recheck_top
from tune_tl.store.lock import SearchLock
from tune_tl.store.storage import Location, private_temp_root

pytestmark = pytest.mark.slow  # every case reads the session's finished search (or runs one)

ROOT = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the SHA-256 of its bytes (folders as ``dir``): 'unchanged' compares two."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            out[str((Path(folder) / name).relative_to(root))] = "dir"
        for name in files:
            p = Path(folder) / name
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def refused(args: list[str], capsys, expected: str) -> str:
    """Run ``tune-tl ARGS``: exit 2 with one ``tune-tl: error:`` line containing ``expected``, no traceback."""
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("tune-tl: error:")]
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------- a results folder never runs code

EVIL = '''import pathlib
pathlib.Path({marker!r}).write_text("this code ran")
SETTINGS = {{"resolutions": [32]}}


def space(trial):
    trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    return {{"resolution": 32}}
'''


def crafted(search: Path, marker: Path) -> Path:
    """``search`` rewritten so that its record names a ``.py`` space, inside the folder, that would create ``marker``;
    the record's hash is that file's, as a crafter would make it."""
    evil = search / "evil.py"
    evil.write_text(EVIL.format(marker=str(marker)))
    meta = json.loads((search / "search.json").read_text())
    text = evil.read_text()
    meta.update(space_file=str(evil), space_path=str(evil), space_text=text, space_sha256=hashlib.sha256(text.encode()).hexdigest(),
                root=str(search))
    (search / "search.json").write_text(json.dumps(meta))
    return evil


@pytest.mark.parametrize("command", [["export"], ["retrain", "--device", "cpu"], ["resume"]])
def test_a_crafted_search_naming_a_py_space_is_refused_without_running_it(command, search_copy, tmp_path, capsys):
    marker = tmp_path / "marker"
    crafted(search_copy, marker)
    before = snapshot(search_copy)
    args = [command[0], str(search_copy), *command[1:]]
    line = refused(args, capsys, "pass that file with --space FILE")
    print(f"{command[0]}: {line}", file=sys.__stderr__)
    assert not marker.exists()
    assert snapshot(search_copy) == before


def test_a_recheck_of_a_crafted_search_is_refused_without_running_it(search_copy, tmp_path):
    marker = tmp_path / "marker"
    crafted(search_copy, marker)
    before = snapshot(search_copy)
    with pytest.raises(TuneTLError, match="pass that file with --space FILE"):
        recheck_top(search_copy, 1, device="cpu")
    assert not marker.exists() and snapshot(search_copy) == before


def test_space_names_the_py_file_and_a_changed_one_is_refused(search_copy, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = crafted(search_copy, marker)
    other = tmp_path / "other.py"
    other.write_text(evil.read_text() + "# changed\n")
    before = snapshot(search_copy)
    refused(["export", str(search_copy), "--space", str(other), "--to", str(tmp_path / "m")], capsys, "its SHA-256 differs")
    assert not marker.exists() and snapshot(search_copy) == before and not (tmp_path / "m").exists()
    # The file the user names, with the recorded hash, is imported: that is the one way code runs.
    assert main(["export", str(search_copy), "--space", str(evil), "--to", str(tmp_path / "m")]) == 0
    assert marker.exists() and (tmp_path / "m" / "model.pt").is_file()


def test_a_warm_start_reads_only_the_record_never_the_earlier_searchs_space(search_copy, tmp_path):
    from tune_tl.store.search_run import SearchRun

    marker = tmp_path / "marker"
    crafted(search_copy, marker)
    assert SearchRun.open(search_copy).backbone.names  # what a warm start reads of an earlier search
    assert not marker.exists()


# ------------------------------------------------------------------- credentials never persisted


@pytest.fixture
def s3(monkeypatch):
    server = LocalS3()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):  # a URI's credentials go here
        monkeypatch.setenv(key, os.environ.get(key, "test"))
    yield server
    server.stop()


def all_bytes(s3: LocalS3, prefix: str) -> dict[str, bytes]:
    fs_root = Location.parse(s3.uri(prefix))
    return {name: (fs_root / name).read_bytes() for name in s3.listing(prefix)}


def test_credentials_in_output_and_warm_start_uris_reach_no_file_of_the_search(ray_local, finished_search, s3, tmp_path):
    s3.bucket("creds")
    Location.parse(s3.uri("creds/earlier/tiny")).upload_tree(finished_search)  # an earlier search, on the bucket
    output = s3.uri("creds/runs").replace("s3://", "s3://KEYID:SECRET1@") + "&secret_key=SECRET2"
    warm = s3.uri("creds/earlier/tiny").replace("s3://", "s3://KEYID:SECRET3@") + "&session_token=SECRET4"
    space = write_tiny_space(tmp_path, "tiny.yaml", **FINISHED)
    assert main(["search", str(space), "--output", output, "--name", "s", "--samples", "1", "--no-probes",
                 "--warm-start", warm]) == 0
    files = all_bytes(s3, "creds/runs/s")
    assert "tuner.pkl" in files and "search.json" in files and any(name.startswith("trials/") for name in files)
    leaks = {name for name, data in files.items() if b"SECRET" in data}
    assert not leaks, f"secrets in {sorted(leaks)}"
    meta = json.loads(files["search.json"])
    assert "s3://***@creds/runs" in meta["options"]["output"] and "secret_key=***" in meta["options"]["output"]
    assert any("session_token=***" in a for a in meta["options"]["command_line"])
    assert all("***" in w for w in meta["options"]["warm_start"])
    mirror = private_temp_root()
    local = [p for p in mirror.rglob("*") if p.is_file() and b"SECRET" in p.read_bytes()]
    assert not local, local


# ------------------------------------------------------------------- predict: bombs, bad images, damaged model folders


@pytest.fixture(scope="module")
def model(finished_search, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "m"
    assert main(["export", str(finished_search), "--to", str(folder)]) == 0
    return folder


def image(path: Path, size=(16, 16), mode="RGB") -> Path:
    Image.new(mode, size).save(path)
    return path


def test_a_decompression_bomb_is_one_line_exit_2_or_skipped_with_the_flag(model, tmp_path, capsys):
    good = image(tmp_path / "good.png")
    bomb = image(tmp_path / "bomb.png", (10_000, 10_000), mode="1")  # 100 Mpx in a few kB: over Pillow's limit
    refused(["predict", str(model), str(good), str(bomb)], capsys, "bomb.png: refused as a possible decompression bomb")
    out = tmp_path / "p.csv"
    assert main(["predict", str(model), str(good), str(bomb), "--skip-bad-images", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "bomb.png" in err
    assert pd.read_csv(out)["path"].tolist() == [str(good)]
    assert "bomb.png\trefused as a possible decompression bomb" in Path(f"{out}.skipped.txt").read_text()


def test_an_image_beyond_twice_the_pixel_limit_is_refused_too(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own setting: 100x100 is then past its hard error
    big = image(tmp_path / "big.png", (100, 100))
    refused(["predict", str(model), str(big)], capsys, "big.png: refused as a possible decompression bomb")


def test_one_unreadable_image_stops_predict_unless_skipped(model, tmp_path, capsys):
    good = image(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    refused(["predict", str(model), str(good), str(bad)], capsys, "bad.png: not an image file Pillow can read")
    assert main(["predict", str(model), str(good), str(bad), "--skip-bad-images"]) == 0
    captured = capsys.readouterr()
    assert "good.png" in captured.out and "bad.png" not in captured.out and "skipped" in captured.err


def truncated_weights(folder: Path) -> str:
    data = (folder / "model.pt").read_bytes()
    (folder / "model.pt").write_bytes(data[: len(data) // 2])
    return "model.pt: not the weights"


def foreign_weights(folder: Path) -> str:
    import torch

    torch.save({"something": torch.zeros(2)}, folder / "model.pt")
    return "model.pt: not the weights"


def bad_json(folder: Path) -> str:
    (folder / "model.json").write_text("{not json")
    return "model.json: not readable JSON"


def no_preprocessing(folder: Path) -> str:
    info = json.loads((folder / "model.json").read_text())
    del info["preprocessing"]
    (folder / "model.json").write_text(json.dumps(info))
    return "model.json: has no preprocessing"


def bad_preprocessing(folder: Path) -> str:
    info = json.loads((folder / "model.json").read_text())
    info["preprocessing"] = {"resolution": "big"}
    (folder / "model.json").write_text(json.dumps(info))
    return "model.json:"


def missing_weights(folder: Path) -> str:
    (folder / "model.pt").unlink()
    return "expected a model folder with model.pt and model.json"


DAMAGED = [truncated_weights, foreign_weights, bad_json, no_preprocessing, bad_preprocessing, missing_weights]


@pytest.mark.parametrize("damage", DAMAGED, ids=[d.__name__ for d in DAMAGED])
def test_a_damaged_model_folder_is_one_line_exit_2(damage, model, tmp_path, capsys):
    folder = Path(shutil.copytree(model, tmp_path / "m"))
    expected = damage(folder)
    line = refused(["predict", str(folder), str(image(tmp_path / "x.png"))], capsys, expected)
    print(f"{damage.__name__}: {line}", file=sys.__stderr__)


# ------------------------------------------------------------------- the model folder is written as a whole


def test_export_onto_an_existing_folder_is_refused_and_force_replaces_it_as_a_whole(finished_search, tmp_path, capsys):
    target = tmp_path / "existing"
    target.mkdir()
    (target / "model.json").write_text('{"old": true}')
    (target / "notes.txt").write_text("mine")
    before = snapshot(target)
    refused(["export", str(finished_search), "--to", str(target)], capsys, "already exists; choose another folder, or pass --force")
    assert snapshot(target) == before
    assert main(["export", str(finished_search), "--to", str(target), "--force"]) == 0
    assert sorted(p.name for p in target.iterdir()) == ["model.json", "model.pt", "model.pt2"]  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]  # no temporary or old folder left beside it


def test_a_model_folder_that_fails_part_way_leaves_the_old_one_whole(tmp_path):
    import torch

    target = tmp_path / "m"
    target.mkdir()
    (target / "model.json").write_text('{"old": true}')
    before = snapshot(target)
    with pytest.raises(KeyError):  # no preprocessing to build the torch.export program from: fails after model.pt
        save_model_folder(torch.nn.Linear(2, 2), {"classes": []}, target, program=True, replace=True)
    assert snapshot(target) == before and [p.name for p in tmp_path.iterdir()] == ["m"]


# ------------------------------------------------------------------- durability: damaged Parquet parts, the study, temp folders


def truncate_a_part(search: Path, table: str) -> Path:
    part = sorted((search / table).glob("part-*.parquet"))[0]
    bad = part.with_name("part-9-damaged.parquet")
    bad.write_bytes(part.read_bytes()[:100])
    return bad


def test_a_truncated_parquet_part_is_named_set_aside_and_report_and_export_work(search_copy, tmp_path, caplog):
    trials = len(pd.read_parquet(search_copy / "trials"))
    bad = truncate_a_part(search_copy, "trials")
    truncate_a_part(search_copy, "epochs")
    assert main(["report", str(search_copy)]) == 0
    warnings = [r.getMessage() for r in caplog.records if "unreadable Parquet part" in r.getMessage()]
    assert len(warnings) == 2 and any(str(bad) in w for w in warnings), warnings
    assert all("\n" not in w for w in warnings)
    assert (search_copy / "quarantine" / "trials" / bad.name).is_file() and not bad.exists()
    assert (search_copy / "quarantine" / "epochs" / "part-9-damaged.parquet").is_file()
    assert main(["export", str(search_copy), "--to", str(tmp_path / "m")]) == 0
    assert len(pd.read_parquet(search_copy / "trials")) == trials


def test_a_compaction_sets_a_truncated_part_aside_and_merges_the_rest(search_copy):
    from tune_tl.store.results import compact
    from tune_tl.store.schema import TRIAL_SCHEMA

    trials = len(pd.read_parquet(search_copy / "trials"))
    bad = truncate_a_part(search_copy, "trials")
    compact(search_copy / "trials", TRIAL_SCHEMA, only_small=False, drop=frozenset({"none"}))
    assert (search_copy / "quarantine" / "trials" / bad.name).is_file()
    assert len(pd.read_parquet(search_copy / "trials")) == trials


def test_the_dashboard_serves_a_snapshot_copy_never_the_live_study(finished_search, tmp_path):
    import sqlite3

    before = snapshot(finished_search)
    copy = study_copy(Location.parse(finished_search), tmp_path)
    assert copy.parent == tmp_path and copy != finished_search / "optuna.db"
    with sqlite3.connect(copy) as db:  # what optuna-dashboard's delete would do changes only the copy
        db.execute("DELETE FROM trials")
    assert snapshot(finished_search) == before


def test_object_store_mirrors_live_in_a_private_folder_of_this_user(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mirror = Location.parse("s3://bucket/runs/x?endpoint_override=127.0.0.1:1&scheme=http").local_mirror("study")
    root = tmp_path / f"tune_tl-{os.getuid()}"
    assert mirror.is_relative_to(root) and stat.S_IMODE(root.stat().st_mode) == 0o700
    root.chmod(0o777)  # another user could plant files here: refused, not used
    with pytest.raises(TuneTLError, match="is not a private folder"):
        private_temp_root()


def test_a_recheck_is_refused_while_another_driver_holds_the_search(search_copy):
    with SearchLock(search_copy), pytest.raises(TuneTLError, match="is in use by another tune-tl search"):
        recheck_top(search_copy, 1, device="cpu")


def test_an_unreachable_address_fails_in_seconds_before_any_data_is_decoded(tmp_path):
    space = write_tiny_space(tmp_path, "tiny.yaml")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "tune_tl.cli", "search", str(space), "--output", str(tmp_path / "out"),
                           "--address", "127.0.0.1:1"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("tune-tl: error: --address 127.0.0.1:1: no Ray cluster answers there")
    assert "decod" not in done.stderr.lower() and not (tmp_path / "out").exists()
    assert time.monotonic() - started < 60  # the interpreter's imports included; the check itself is one connect
