"""The val predictions table an ensemble is chosen from: written, read back as written, and missing said plainly."""

import json

import numpy as np

from tune_tl.cli import main
from tune_tl.search.val_predictions import ValPredictions, read_val_predictions, write_val_predictions
from tune_tl.store.search_run import SearchRun


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
