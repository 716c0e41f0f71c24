"""Report, retrain and predict on results without Ray: empty and partial searches, bad input."""

import json

import pandas as pd


from tune_tl.cli import main
from tune_tl.analysis.report import asha_rungs, cost_asha_rungs, parameter_importances, write_report
from tune_tl.store.results import ParquetSink
from synthetic import write_synthetic


def test_asha_rungs_follow_grace_period_times_reduction_factor_powers():
    assert asha_rungs({"budget": {"grace_period": 1, "reduction_factor": 3, "max_epochs": 10}}) == [1, 3, 9]
    assert asha_rungs({"budget": {"grace_period": 2, "reduction_factor": 2, "max_epochs": 8}}) == [2, 4]
    assert asha_rungs({}) == []


def test_cost_aware_rungs_are_in_training_seconds_of_the_first_trials_first_epoch():
    search = {"budget": {"grace_period": 1, "reduction_factor": 3, "max_epochs": 10}, "options": {"scheduler": "cost-asha"}}
    epochs = pd.DataFrame({"trial_id": ["b", "a", "a"], "epoch": [1, 1, 2], "epoch_seconds": [0.1, 20.0, 20.0],
                           "time": pd.to_datetime(["2026-01-01 00:00:05", "2026-01-01 00:00:02", "2026-01-01 00:00:04"])})
    assert cost_asha_rungs(search, epochs) == [20.0, 60.0, 180.0], "trial a reported first: 20 s is the unit"
    assert cost_asha_rungs(search, epochs.iloc[:0]) == []


def test_report_on_a_search_with_no_trial_yet_still_writes_a_page(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no trial has finished yet" in out and "importances skipped" in out
    assert (tmp_path / "report" / "index.html").stat().st_size > 0
    assert not (tmp_path / "report" / "importances.png").exists()


def test_report_on_a_running_search_counts_unfinished_trials(tmp_path, capsys):
    sink = ParquetSink(tmp_path, max_epochs=3)
    write_synthetic(sink, 6, 3)
    sink.on_trial_result(0, [], type("T", (), {"trial_id": "live", "config": {}})(), {"epoch": 1, "val_acc": 0.5})
    sink.flush()
    text, files = write_report(tmp_path, top=3)
    assert "6 finished trial(s), 1 running" in text
    assert sum(" completed " in line for line in text.splitlines()) == 3  # the top three rows
    assert {f.name for f in files} >= {"learning_curves.png", "importances.png", "index.html"}


def test_importances_need_enough_trials(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=2)
    write_synthetic(sink, 4, 2)
    from tune_tl.analysis.frame import load_results

    assert parameter_importances(load_results(tmp_path).trials) is None


def test_retrain_and_predict_name_what_is_missing(tmp_path, capsys):
    write_synthetic(ParquetSink(tmp_path, max_epochs=1), 2, 1)
    assert main(["retrain", str(tmp_path)]) == 2
    assert "search.json is missing" in capsys.readouterr().err
    (tmp_path / "search.json").write_text(json.dumps({"budget": {"max_epochs": 1}}))
    assert main(["retrain", str(tmp_path), "--trial", "nope"]) == 2
    assert "trial 'nope' is not among the finished trials" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "x.png"]) == 2
    assert "expected a model folder with model.pt and model.json" in capsys.readouterr().err
