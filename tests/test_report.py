"""Report, retrain and predict on results without Ray: empty and partial searches, bad input."""

import json
from types import SimpleNamespace

import pytest
from matplotlib.text import Text
from PIL import Image
from synthetic import write_synthetic

from tune_tl.analysis import plots
from tune_tl.analysis.figure_style import DPI, STYLE, WIDTH
from tune_tl.analysis.frame import load_results
from tune_tl.analysis.importances import parameter_importances
from tune_tl.analysis.report import write_report
from tune_tl.analysis.rungs import asha_rungs, scheduler_rungs
from tune_tl.cli import main
from tune_tl.config.params import TrialConfig
from tune_tl.config.spec import BudgetSpec
from tune_tl.search.cost_asha import CostASHA
from tune_tl.search.schedulers import make_scheduler
from tune_tl.store.results import ParquetSink
from tune_tl.store.search_run import SearchRun
from tune_tl.training.cost_model import CostModel


def test_asha_rungs_follow_grace_period_times_reduction_factor_powers():
    assert asha_rungs(BudgetSpec(grace_period=1, reduction_factor=3, max_epochs=10)) == [1, 3, 9]
    # Ray's ASHA counts int(log(max_t / min_t) / log(rf) + 1) rungs: one at max_epochs itself (the report once drew [2, 4]).
    assert asha_rungs(BudgetSpec(grace_period=2, reduction_factor=2, max_epochs=8)) == [2, 4, 8]
    assert asha_rungs(None) == []


def search_json(folder, scheduler, grace=1, factor=3, max_epochs=10):
    budget = {"grace_period": grace, "reduction_factor": factor, "max_epochs": max_epochs}
    (folder / "search.json").write_text(json.dumps({"budget": budget, "options": {"scheduler": scheduler}}))
    return SimpleNamespace(budget=SimpleNamespace(**budget))


@pytest.mark.parametrize("name", ["asha", "pasha"])
@pytest.mark.parametrize("grace, factor, max_epochs", [(1, 3, 9), (2, 2, 8), (1, 2, 4), (1, 3, 10)])
def test_epoch_rungs_the_report_draws_are_the_rungs_of_the_scheduler_the_search_built(name, grace, factor, max_epochs, tmp_path):
    spec = search_json(tmp_path, name, grace, factor, max_epochs)  # the first three: the old `while r < top` loop lost the top rung
    built = make_scheduler(name, spec, tmp_path)
    assert scheduler_rungs(SearchRun(tmp_path)).milestones == sorted(m for m, _ in built._brackets[0]._rungs)


def test_a_fifo_search_has_no_rungs_to_draw(tmp_path):
    search_json(tmp_path, "fifo")
    assert scheduler_rungs(SearchRun(tmp_path)).milestones == []


def test_cost_aware_rungs_are_the_ones_the_scheduler_recorded_and_the_curves_are_on_its_predicted_clock(tmp_path):
    search_json(tmp_path, "cost-asha", grace=1, factor=3, max_epochs=10)
    rungs = scheduler_rungs(SearchRun(tmp_path))
    assert rungs.clock == "seconds" and rungs.milestones == [] and "not recorded its rungs yet" in rungs.caption()
    model = CostModel({"toy": {32: (1e6, 2e6, 3e6)}}, {"toy": 16}, num_classes=10, train_images=100, val_images=20)
    cost = CostASHA(tmp_path, metric="val_acc", mode="max", max_epochs=10, grace_period=1, reduction_factor=3, cost_model=model)
    rungs = scheduler_rungs(SearchRun(tmp_path))
    assert rungs.clock == "cost" and rungs.milestones == [1, 3, 9] and [m * rungs.unit for m in rungs.milestones] == cost.rungs
    configs = [{"backbone": "toy", "resolution": 32, "freeze_policy": p} for p in ("full", "head_only")]
    res = write_trials(tmp_path, configs, [0.9, 0.8], epochs=3)
    ax = plots.learning_curves(res, rungs).axes[0]
    assert [line.get_xdata()[0] for line in ax.lines if line.get_gid() == "rung"] == [1, 3, 9]
    curves = [list(line.get_xdata()) for line in ax.lines if line.get_gid() != "rung" and len(line.get_xdata())]
    head_only = [model.trial_cost(TrialConfig.from_dict(configs[1]), e) / rungs.unit for e in (1, 2, 3)]
    assert curves == [[1, 2, 3], head_only] and head_only[0] > 0.3 and head_only[2] - head_only[0] < 0.001
    # Every epoch took 1 s: the median of measured / predicted over the six epochs says what a unit took.
    assert rungs.seconds_per_unit(res.trials, res.epochs) == pytest.approx((1 + 1 / head_only[0]) / 2)
    write_report(tmp_path)
    assert "rungs at 1, 3, 9 units of predicted cost" in (tmp_path / "report" / "index.html").read_text()


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


def test_the_page_shows_the_shipped_trial_s_test_score_and_the_ensemble_beside_it(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=3)
    write_synthetic(sink, 6, 3)
    sink.flush()
    test = {"trial_id": "t0", "test_acc": 0.875, "test_images": 400, "val_acc": 0.9, "ensemble_test_acc": 0.89}
    ensemble = {"members": [{"trial_id": "t0", "weight": 0.5}, {"trial_id": "t1", "weight": 0.5}], "val_acc": 0.915,
                "best_single_val_acc": 0.9}
    (tmp_path / "search.json").write_text(json.dumps({"test": test, "ensemble": ensemble}))
    write_report(tmp_path)
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Single winner t0: val 0.9000, <b>test 0.8750</b> on 400 held-out images" in page
    assert ("Ensemble chosen on val (t0 0.50, t1 0.50): val 0.9150 against the best single's 0.9000, test 0.8900; "
            "tune-tl export ships it") in page
    (tmp_path / "search.json").write_text(json.dumps({"ensemble": {**ensemble, "val_acc": 0.905}}))
    write_report(tmp_path)
    page = (tmp_path / "report" / "index.html").read_text()
    assert "No test split: the best val accuracy is the maximum over every trial, so optimistic" in page
    assert "tune-tl export ships the best single (--ensemble exports it)" in page


def test_importances_need_enough_trials(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=2)
    write_synthetic(sink, 4, 2)
    assert parameter_importances(load_results(tmp_path).trials) is None


def test_retrain_and_predict_name_what_is_missing(tmp_path, capsys):
    write_synthetic(ParquetSink(tmp_path, max_epochs=1), 2, 1)
    assert main(["retrain", str(tmp_path)]) == 2
    assert "search.json is missing" in capsys.readouterr().err
    (tmp_path / "search.json").write_text(json.dumps({"budget": {"max_epochs": 1}}))
    assert main(["retrain", str(tmp_path), "--trial", "nope"]) == 2  # the space is read first (a .py one needs --space)
    assert "search.json has no space_text, data, backbone" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "x.png"]) == 2
    assert "expected a model folder with model.pt and model.json" in capsys.readouterr().err


def write_trials(folder, configs, best, epochs=2):
    """One trial per config through the real sink; trial i reaches ``best[i]`` at its last epoch."""
    sink = ParquetSink(folder, max_epochs=epochs)
    for i, (config, acc) in enumerate(zip(configs, best, strict=False)):
        trial = SimpleNamespace(trial_id=f"t{i:03d}", config=config, error_file=None)
        sink.on_trial_start(0, [], trial)
        for e in range(1, epochs + 1):
            sink.on_trial_result(0, [], trial, {"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "val_acc": acc - 0.02 * (epochs - e),
                                                "scheduled_lr": 0.01, "epoch_seconds": 1.0, "trainable_params": 1000 * (i + 1),
                                                "diverged": False})
        sink.on_trial_complete(0, [], trial)
    sink.on_experiment_end([])
    return load_results(folder)


ACCURACIES = [0.83, 0.86, 0.9, 0.93, 0.95, 0.97]


def test_report_skips_the_policy_plot_when_one_policy_was_searched(tmp_path):
    res = write_trials(tmp_path, [{"freeze_policy": "prefix", "freeze_blocks": i % 3, "lr": 1e-3} for i in range(6)], ACCURACIES)
    fig = plots.accuracy_by_freeze(res)
    assert fig.get_suptitle() == "Best accuracy by freeze_blocks" and [ax.get_xlabel() for ax in fig.axes] == ["freeze_blocks"]


def test_report_leaves_out_plots_of_parameters_that_did_not_vary_and_removes_stale_ones(tmp_path):
    write_trials(tmp_path, [{"freeze_policy": "prefix", "freeze_blocks": 2, "lr": 1e-3, "head": h} for h in ["linear", "mlp"] * 3],
                 ACCURACIES)
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "accuracy_vs_lr.png").write_bytes(b"from an earlier report")
    _, files = write_report(tmp_path)
    names = {f.name for f in files}
    assert "accuracy_vs_freeze.png" not in names and "accuracy_vs_lr.png" not in names
    assert not (tmp_path / "report" / "accuracy_vs_lr.png").exists()
    assert "accuracy_vs_lr" not in (tmp_path / "report" / "index.html").read_text()


def test_accuracy_axes_are_zoomed_to_the_data_and_say_so_unless_the_data_reach_down_to_0(tmp_path):
    res = write_trials(tmp_path / "a", [{"lr": 10 ** -(i / 2 + 2), "freeze_blocks": i % 3} for i in range(6)], ACCURACIES)
    for fig in (plots.accuracy_by_freeze(res), plots.accuracy_vs_lr(res), plots.pareto(res)):
        ax = fig.axes[0]
        bottom, top = ax.get_ylim()
        assert 0.75 < bottom < 0.83 and 0.97 < top < 1.0, ax.get_title()
        assert "not from 0" in ax.get_ylabel()
    low = write_trials(tmp_path / "b", [{"lr": 10 ** -(i / 2 + 2)} for i in range(6)], [0.1, 0.3, 0.5, 0.7, 0.8, 0.9])
    ax = plots.accuracy_vs_lr(low).axes[0]
    assert ax.get_ylim()[0] == 0 and "not from 0" not in ax.get_ylabel()


def test_every_figure_has_the_same_width_and_the_same_fonts(tmp_path):
    write_synthetic(ParquetSink(tmp_path, max_epochs=3), 12, 3)
    _, files = write_report(tmp_path)
    pngs = [f for f in files if f.suffix == ".png"]
    assert len(pngs) == 6 and {Image.open(f).size[0] for f in pngs} == {int(WIDTH * DPI)}
    res = load_results(tmp_path)
    figures = [plots.learning_curves(res, scheduler_rungs(SearchRun(tmp_path))), plots.anytime(res), plots.accuracy_by_freeze(res),
               plots.accuracy_vs_lr(res), plots.importances_plot(parameter_importances(res.trials, res.epochs)), plots.pareto(res)]
    for fig in figures:
        ax = fig.axes[0]
        title = next(t for t in fig.findobj(Text) if t.get_text() == (fig.get_suptitle() or ax.get_title()))
        assert title.get_fontsize() == STYLE["axes.titlesize"] == STYLE["figure.titlesize"]
        assert ax.xaxis.label.get_fontsize() == STYLE["axes.labelsize"]
        assert {t.get_fontsize() for t in ax.get_yticklabels()} == {STYLE["ytick.labelsize"]}
        assert title.get_fontfamily() == [STYLE["font.family"]]


def test_learning_curves_draw_a_dotted_line_at_each_rung_and_name_them_in_the_caption(tmp_path):
    search_json(tmp_path, "asha", grace=1, factor=2, max_epochs=4)
    write_synthetic(ParquetSink(tmp_path, max_epochs=4), 3, 4)
    rungs = scheduler_rungs(SearchRun(tmp_path))
    fig = plots.learning_curves(load_results(tmp_path), rungs)
    assert [line.get_xdata()[0] for line in fig.axes[0].lines if line.get_gid() == "rung"] == [1, 2, 4]
    write_report(tmp_path)
    assert "ASHA rungs at epochs 1, 2, 4" in (tmp_path / "report" / "index.html").read_text()
