"""A real tiny search over a user's image folder: decoded once in the driver, shared with every trial."""

import json
import logging

import pandas as pd
import pytest
from spaces import write_tiny_space

import tune_tl.search.run
from tests.data.images import write_class_tree
from tune_tl.cli import main

#: A linear probe on augmented images (so the feature cache is off and every epoch decodes tensors).
AUGMENTED = {"freeze_blocks": "all", "lr": {"low": 1.0e-3, "high": 3.0e-2, "log": True}, "head": "linear",
             "aug_crop_scale": [0.5, 1.0], "aug_flip": [True, False], "aug_rotate": [0, 10], "aug_jitter": 0.2}


@pytest.mark.slow
def test_search_over_an_image_folder_runs_with_the_folder_gone_once_data_is_prepared(ray_local, tmp_path, monkeypatch, capsys, caplog):
    photos = write_class_tree(tmp_path / "photos", per_class=12)
    (photos / "b" / "broken.jpg").touch()  # a zero-byte file, skipped and listed
    space = write_tiny_space(tmp_path, data={"source": None, "val_fraction": 0.25}, budget={"samples": 3, "max_epochs": 2},
                             params={"resolution": [32, 48], **AUGMENTED})

    # Trials run in other processes; once the driver has prepared the data, take the images away.
    # Any trial that read or decoded an image file would now fail (status "error").
    build_tuner = tune_tl.search.run.build_tuner

    def build_tuner_without_the_folder(*args, **kwargs):
        photos.rename(tmp_path / "photos-moved")
        return build_tuner(*args, **kwargs)

    monkeypatch.setattr(tune_tl.search.run, "build_tuner", build_tuner_without_the_folder)
    with caplog.at_level(logging.INFO, logger="tune_tl"):
        code = main(["search", str(space), "--no-probes", "--data", str(photos), "--skip-bad-images",
                     "--output", str(tmp_path / "out"), "--name", "photos", "--concurrency", "2"])
    assert code == 0
    assert not photos.exists(), "the folder was gone while trials ran"
    assert "in memory" in caplog.text and "streaming" not in caplog.text

    root = tmp_path / "out" / "photos"
    trials = pd.read_parquet(root / "trials")
    assert len(trials) == 3 and set(trials["status"]) <= {"completed", "pruned"}, trials[["status", "error"]]
    for column in ("resolution", "aug_crop_scale", "aug_flip", "aug_rotate", "aug_jitter"):
        assert column in trials.columns and trials[column].notna().all()
    assert set(trials["resolution"]) <= {32, 48} and set(trials["aug_flip"]) <= {0, 1}
    assert (trials["aug_jitter"] == 0.2).all()
    assert trials["best_val_acc"].max() > 0.5, "three solid colours are easy for pretrained features (chance 0.33)"

    meta = json.loads((root / "search.json").read_text())
    assert meta["skipped_images"] == 1 and "3 classes" in meta["data_loaded"] and "in memory" in meta["data_loaded"]
    assert (root / "skipped_images.txt").read_text() == f"{photos / 'b' / 'broken.jpg'}: is empty (0 bytes)\n"
    out = capsys.readouterr().out
    assert f"Skipped 1 bad image file(s); listed in {root / 'skipped_images.txt'}" in out


@pytest.mark.slow
def test_a_folder_over_the_memory_budget_is_streamed_by_the_trials(ray_local, tmp_path, caplog):
    photos = write_class_tree(tmp_path / "photos", per_class=8)
    space = write_tiny_space(tmp_path, data={"source": "imagefolder", "path": str(photos), "val_fraction": 0.25, "memory_budget_mb": 0.01},
                             params=AUGMENTED)
    with caplog.at_level(logging.INFO, logger="tune_tl"):
        code = main(["search", str(space), "--output", str(tmp_path / "out"), "--name", "streamed", "--no-probes"])
    assert code == 0
    assert "streaming from files" in caplog.text and "data.memory_budget_mb 0.01" in caplog.text
    trials = pd.read_parquet(tmp_path / "out" / "streamed" / "trials")
    assert len(trials) == 2 and (trials["status"] == "completed").all(), trials[["status", "error"]]
    assert not (tmp_path / "out" / "streamed" / "skipped_images.txt").exists()
