"""A real tiny search (the session's one), then what people do with it: report, retrain the best trial, predict an image file."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from tune_tl.analysis.frame import leaderboard, load_results
from tune_tl.analysis.plots import learning_curves
from tune_tl.analysis.rungs import scheduler_rungs
from tune_tl.cli import main
from tune_tl.store.search_run import SearchRun


@pytest.fixture
def search(search_copy):
    """The session's finished search (``finished_search`` in conftest.py), copied: these tests write into it."""
    return search_copy


@pytest.mark.slow
def test_search_json_records_the_run_and_its_nodes(search):
    info = json.loads((search / "search.json").read_text())
    assert info["budget"] == {"samples": 5, "max_epochs": 2, "grace_period": 1, "reduction_factor": 2.0, "time": 600.0,
                              "keep_checkpoints": 3}
    assert info["options"]["command_line"][:2] == ["tune-tl", "search"] and "--concurrency" in info["options"]["command_line"]
    assert info["end_time"] and len(info["node_ids"]) >= 1 and "budget:" in info["space_text"]


@pytest.mark.slow
def test_report_prints_the_leaderboard_best_first_and_writes_plots_and_html(search, capsys):
    assert main(["report", str(search)]) == 0
    out = capsys.readouterr().out
    res = load_results(search)
    expected = leaderboard(res)["trial_id"].tolist()
    printed = [m for m in re.findall(r"^\s*\d+\s+(\S+)\s+(?:completed|pruned|diverged|error)", out, re.M)]
    assert printed == expected and len(expected) == 6, "five trials and a probe"
    ranked = res.trials.set_index("trial_id").loc[expected[:2], "best_val_acc"]
    assert ranked.iloc[0] >= ranked.iloc[1]
    for name in ("learning_curves.png", "accuracy_vs_lr.png", "importances.png", "index.html"):
        assert (search / "report" / name).stat().st_size > 1000, name
    assert not (search / "report" / "accuracy_vs_freeze.png").exists(), "freeze_blocks and freeze_policy were fixed: nothing to plot"
    page = (search / "report" / "index.html").read_text()
    assert expected[0] in page and "learning_curves.png" in page


@pytest.mark.slow
def test_the_report_draws_exactly_the_rungs_cost_aware_asha_recorded_in_scheduler_json(search):
    assert json.loads((search / "search.json").read_text())["options"]["scheduler"] == "cost-asha"
    recorded = json.loads((search / "scheduler.json").read_text())
    assert recorded["rungs"] == [recorded["unit"], 2 * recorded["unit"]]  # grace 1, factor 2, 2 epochs; in predicted FLOPs
    fig = learning_curves(load_results(search), scheduler_rungs(SearchRun(search)))
    assert [line.get_xdata()[0] for line in fig.axes[0].lines if line.get_gid() == "rung"] == [1.0, 2.0]  # in units
    assert main(["report", str(search)]) == 0
    page = (search / "report" / "index.html").read_text()
    assert "cost-aware ASHA rungs at 1, 2 units of predicted cost" in page


@pytest.mark.slow
def test_retrained_best_model_predicts_image_files_and_seeds_a_new_backbone(search, tmp_path, capsys):
    from sklearn.datasets import load_digits

    from tune_tl.models import build_backbone

    assert main(["retrain", str(search)]) == 0
    out = capsys.readouterr().out
    best = leaderboard(load_results(search)).iloc[0]["trial_id"]
    model_dir = search / "models" / best
    info = json.loads((model_dir / "model.json").read_text())
    assert info["classes"] == [str(i) for i in range(10)] and info["preprocessing"]["resolution"] == 32
    assert info["metrics"]["evaluated_on"] == "val" and info["metrics"]["accuracy"] > 0.5
    assert f"val accuracy {info['metrics']['accuracy']:.4f}" in out

    digits = load_digits()
    files = []
    for index in (0, 1, 2, 3, 4, 5):
        file = tmp_path / f"digit{index}.png"
        Image.fromarray(np.uint8(digits.images[index] * 255 / 16)).resize((64, 64)).save(file)  # grey, other size
        files.append(str(file))
    assert main(["predict", str(model_dir), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    predicted = [line.split("\t") for line in lines]
    assert all(p[0] == f and p[1] in info["classes"] and 0 < float(p[2]) <= 1 for p, f in zip(predicted, files, strict=False))
    correct = sum(p[1] == str(digits.target[i]) for i, p in enumerate(predicted))
    assert correct >= 3, f"only {correct}/6 digits right: preprocessing differs from training?"

    backbone = build_backbone("efficientnet_lite0", model_dir / "model.pt")  # transfer from your own model
    saved = torch.load(model_dir / "model.pt", weights_only=True)
    for key, value in backbone.features.state_dict().items():
        assert torch.equal(value, saved[f"features.{key}"])
