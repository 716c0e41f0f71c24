"""From your own images to a shipped model: search an image folder, export the best epoch, predict.

The exported (or retrained) model folder, given the validation images, reproduces the accuracy the
search recorded for them, image for image: the same preprocessing, the same weights.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from spaces import write_tiny_space

from tests.data.images import write_class_tree, write_split_folder
from tune_tl import best_trial, load_results
from tune_tl.cli import main


def accuracy(predictions: pd.DataFrame) -> float:
    """Share of rows whose label is the image's class folder."""
    truth = predictions["path"].map(lambda p: Path(p).parent.name)
    return float((predictions["label"] == truth).mean())


def search(tmp_path: Path, data: Path, name: str, *flags: str) -> Path:
    space = write_tiny_space(tmp_path, data={"source": None, "val_fraction": 0.3}, budget={"max_epochs": 2}, params={
        "resolution": {"low": 32, "high": 64, "step": 32}, "batch_size": 16, "freeze_blocks": ["all", 6],
        "lr": {"low": 1.0e-3, "high": 3.0e-2, "log": True}, "head": "linear"})
    assert main(["search", str(space), "--data", str(data), "--output", str(tmp_path / "out"), "--name", name, *flags]) == 0
    return tmp_path / "out" / name


@pytest.mark.slow
def test_an_exported_best_epoch_predicts_the_val_folder_with_its_recorded_accuracy(ray_local, tmp_path):
    photos = write_split_folder(tmp_path / "photos", train=8, val=4, test=3)  # 40×30 photos: the crop matters
    root = search(tmp_path, photos, "own")
    trials = pd.read_parquet(root / "trials")
    assert trials["probe"].sum() == 1 and len(trials) == 3, "one probe, then the two trials"
    assert set(trials["status"]) <= {"completed", "pruned"}, trials[["status", "error"]]
    assert set(trials["resolution"]) <= {32, 64}

    model = tmp_path / "model"
    assert main(["export", str(root), "--to", str(model)]) == 0
    info = json.loads((model / "model.json").read_text())
    best = best_trial(load_results(root))  # the winner: best val_acc, ties to the shorter trial
    assert info["trial_id"] == best["trial_id"] and info["classes"] == ["a", "b", "c"]
    assert info["val_acc"] == pytest.approx(best["best_val_acc"]) and info["epoch"] == best["best_epoch"]
    assert info["preprocessing"]["resolution"] == best["resolution"] and info["backbone"] == "efficientnet_lite0"

    out = tmp_path / "val.csv"
    assert main(["predict", str(model), str(photos / "val"), "--output", str(out)]) == 0
    predictions = pd.read_csv(out)
    assert list(predictions.columns) == ["path", "label", "confidence"] and len(predictions) == 12
    assert accuracy(predictions) == pytest.approx(best["best_val_acc"], abs=1e-12)

    # Plain PyTorch: the torch.export program and model.json, no tune_tl.
    from PIL import Image, ImageOps

    program = torch.export.load(str(model / "model.pt2")).module()
    pre = info["preprocessing"]
    files = sorted((photos / "val").rglob("*.png"))
    x = torch.stack([torch.from_numpy(np.array(ImageOps.fit(Image.open(f).convert("RGB"), (pre["resolution"],) * 2,
                                                               Image.Resampling.BICUBIC))).permute(2, 0, 1) for f in files]).float()
    x = (x - torch.tensor(pre["mean"]).view(1, 3, 1, 1) * 255) / (torch.tensor(pre["std"]).view(1, 3, 1, 1) * 255)
    labels = [info["classes"][i] for i in program(x).argmax(1).tolist()]
    assert labels == predictions.sort_values("path")["label"].tolist()

    # Retrain on train+val: evaluated on test/, and predict agrees with that number.
    assert main(["retrain", str(root), "--train-on", "train+val"]) == 0
    retrained = root / "models" / best["trial_id"]
    metrics = json.loads((retrained / "model.json").read_text())["metrics"]
    assert metrics["evaluated_on"] == "test" and metrics["train_on"] == "train+val"
    assert main(["predict", str(retrained), str(photos / "test"), "--output", str(tmp_path / "test.parquet")]) == 0
    assert accuracy(pd.read_parquet(tmp_path / "test.parquet")) == pytest.approx(metrics["accuracy"], abs=1e-12)


@pytest.mark.slow
def test_a_flat_folder_exports_any_trial_and_retrains_to_the_accuracy_predict_measures(ray_local, tmp_path):
    from tune_tl.analysis.export import export_model
    from tune_tl.analysis.predict import predict
    from tune_tl.analysis.retrain import retrain
    from tune_tl.data.imagefolder import scan
    from tune_tl.data.prepare import stratified_split

    photos = write_class_tree(tmp_path / "photos", per_class=10)
    root = search(tmp_path, photos, "flat", "--recheck", "1")
    trials = pd.read_parquet(root / "trials").sort_values("best_val_acc")
    rechecked = pd.read_parquet(root / "recheck")
    assert len(rechecked) == 2 and rechecked["trial_id"].nunique() == 1, "the top config, two more seeds"
    worst = trials.iloc[0]
    # The validation images: the search's seeded, stratified split of the folder.
    files, labels = scan(photos).parts["pool"]
    val_files = [files[i] for i in stratified_split(labels, 0.3, seed=0)[1]]

    model = export_model(root, worst["trial_id"], tmp_path / "worst", program=False).directory
    rows = pd.DataFrame(predict(model, val_files), columns=["path", "label", "confidence"])
    assert accuracy(rows) == pytest.approx(worst["best_val_acc"], abs=1e-12)

    saved = retrain(root, program=False)
    assert saved.metrics["evaluated_on"] == "val"
    rows = pd.DataFrame(predict(saved.directory, val_files), columns=["path", "label", "confidence"])
    assert accuracy(rows) == pytest.approx(saved.metrics["accuracy"], abs=1e-12)
