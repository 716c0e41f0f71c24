"""The val predictions table an ensemble is chosen from: written, read back as written, and missing said plainly."""

import json

import numpy as np
import torch
from spaces import TINY_CNN

from tune_tl.cli import main
from tune_tl.config.params import TrialConfig
from tune_tl.data.preprocess import normalise
from tune_tl.data.types import Split
from tune_tl.models import build_backbone
from tune_tl.search.val_predictions import ValPredictions, class_probabilities, read_val_predictions, write_val_predictions
from tune_tl.store.search_run import SearchRun
from tune_tl.training.recipe import build_network


def test_val_predictions_read_back_as_written_in_the_candidates_order(tmp_path):
    run = SearchRun(tmp_path)
    labels = np.array([2, 0, 1, 1])
    probs = {"probe-x-32": np.eye(3, dtype=np.float32)[[2, 0, 1, 0]], "t1": np.full((4, 3), 1 / 3, dtype=np.float32)}
    write_val_predictions(run, ValPredictions(labels, probs))
    write_val_predictions(run, ValPredictions(labels, probs))  # replaced, not appended
    back = read_val_predictions(run)
    assert list(back.probs) == ["probe-x-32", "t1"]
    assert np.array_equal(back.labels, labels)
    for key, p in probs.items():
        assert np.array_equal(back.probs[key], p)
    assert len(list((tmp_path / "val_predictions").iterdir())) == 1


def test_tune_tl_ensemble_on_a_search_without_val_predictions_exits_2_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "search.json").write_text(json.dumps({"name": "old"}))
    assert main(["ensemble", str(tmp_path)]) == 2
    assert "no val_predictions/" in capsys.readouterr().err
    assert json.loads((tmp_path / "search.json").read_text()) == {"name": "old"}


def test_class_probabilities_come_from_a_folded_copy_that_agrees_with_the_network_and_leaves_it_as_it_was():
    """The end's test and ensemble passes run the network with batch norm folded (``models.folding``): faster, the
    same probabilities; the network itself runs once, on the first batch, to check the copy."""
    torch.manual_seed(0)
    network = build_network(TrialConfig.from_dict({"backbone": TINY_CNN["name"], "resolution": 32}), build_backbone(TINY_CNN["name"]), 3)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    split = Split(images, np.arange(10) % 3, images, np.arange(10) % 3)
    norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    calls = []
    norms[0].register_forward_hook(lambda *_: calls.append(1))

    probs = class_probabilities(network, split, "val", torch.device("cpu"), batch_size=4)  # three batches

    assert len(calls) == 1 and all(isinstance(m, torch.nn.BatchNorm2d) for m in norms), "the network checked the copy, once"
    with torch.no_grad():
        x = normalise(torch.from_numpy(images), network.backbone.mean, network.backbone.std)
        expected = torch.softmax(network(x), 1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
