"""A real search whose ``--output`` is an S3 bucket (a local S3 server), then resumed from it."""

import optuna
import pytest
from s3_server import LocalS3
from spaces import TINY_CNN, write_tiny_space

from tune_tl.analysis.frame import load_results
from tune_tl.cli import main
from tune_tl.search.resume import resume_search
from tune_tl.store.storage import Location


@pytest.fixture()
def s3():
    server = LocalS3()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_search_on_s3_keeps_results_study_and_checkpoints_in_the_bucket_and_resumes_from_there(
        ray_local, s3, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # anything written locally by mistake would land here
    s3.bucket("runs")
    # Four checkpoints kept: the probe's stays whatever the fine-tunes score (retention keeps the best 3 by default).
    space = write_tiny_space(tmp_path, backbone=TINY_CNN, budget={"samples": 3, "max_epochs": 2, "keep_checkpoints": 4}, params={
        "freeze_blocks": {"low": 7, "high": "all"}, "lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}, "head": "linear"})

    assert main(["search", str(space), "--output", s3.uri("runs/tune"), "--name", "s3demo"]) == 0
    assert "s3://runs/tune/s3demo/trials" in capsys.readouterr().out

    files = s3.listing("runs/tune/s3demo")
    assert "search.json" in files and "optuna.db" in files and "tuner.pkl" in files
    assert any(f.startswith("trials/part-") for f in files) and any(f.startswith("epochs/part-") for f in files)
    assert any("/checkpoint_" in f for f in files), "Ray wrote the trial checkpoints to the bucket"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"], "nothing was written locally"

    uri = s3.uri("runs/tune/s3demo")
    res = load_results(uri)
    probe = res.trials["probe"]
    assert len(res.trials[~probe]) == 3 and probe.sum() == 1 and res.trials.loc[~probe, "node_id"].notna().all()
    assert any(f.startswith(f"probe-{TINY_CNN['name']}-32/checkpoint_") for f in files) and "probe_heads.pt" in files, \
        "the probe's weights and head are in the bucket too"
    assert res.search["root"] == "s3://runs/tune/s3demo"
    study_copy = tmp_path / "study" / "optuna.db"
    assert (Location.parse(uri) / "optuna.db").download(study_copy)
    study = optuna.load_study(study_name="s3demo", storage=f"sqlite:///{study_copy}")
    # Every sampled trial; not the probe: the space fixes its backbone and resolution, so it has nothing to tell TPE.
    assert len(study.trials) == 3, "the uploaded study holds every sampled trial"

    # Another driver (same URI) extends it: Ray restores from the bucket, the study from its copy there.
    resume_search(uri, samples=4)
    res = load_results(uri)
    assert len(res.trials) == 5 and res.trials["trial_id"].is_unique
    assert not res.epochs.duplicated(["trial_id", "epoch"]).any()
    assert (Location.parse(uri) / "optuna.db").download(study_copy)
    assert len(optuna.load_study(study_name="s3demo", storage=f"sqlite:///{study_copy}").trials) == 4

    assert main(["report", uri]) == 0
    assert (tmp_path / "s3demo-report" / "index.html").is_file(), "a remote search's report is written here"
    assert main(["retrain", uri]) == 0
    assert len(list(tmp_path.glob("models/*/model.pt"))) == 1, "and its retrained model too"

