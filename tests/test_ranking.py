"""One best trial and one shipped winner: the progress view, the summary, the report, export and the recheck printout
all name the one that ``store.ranking`` names, a stage-0 probe included."""

import time
from types import SimpleNamespace

import pandas as pd
import pytest

import tune_tl.search.recheck as recheck_module
from tune_tl.analysis.export import pick_trial
from tune_tl.analysis.frame import leaderboard, load_results
from tune_tl.analysis.report import shipped_note
from tune_tl.cli import _print_recheck
from tune_tl.search.progress import SearchProgress
from tune_tl.search.summary import summarize
from tune_tl.store.ranking import best_of, recheck_table, shipped_row
from tune_tl.store.results import ParquetSink, epoch_row, trial_row, write_table_atomic
from tune_tl.store.schema import EPOCH_SCHEMA, RECHECK_SCHEMA, TRIAL_SCHEMA
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location
from tune_tl.store.trial_record import TrialRecord

PROBE = "probe-efficientnet_lite0-32"


def write_probe(run: SearchRun, acc: float) -> None:
    record = TrialRecord()
    record.add_epoch(1, acc, diverged=False)
    metrics = {"epoch": 1, "val_acc": acc, "epoch_seconds": 1.0, "phase": "probe", "workers": 1}
    write_table_atomic([epoch_row(PROBE, metrics, time.time(), probe=True)], EPOCH_SCHEMA, run.epochs_dir)
    config = {"backbone": "efficientnet_lite0", "resolution": 32, "freeze_policy": "head_only"}
    write_table_atomic([trial_row(PROBE, config, record, "completed", None, 1.0, workers=1, probe=True)], TRIAL_SCHEMA, run.trials_dir)


def search(tmp_path, probe_acc: float):
    """A probe, then two trials that tie on accuracy: 'aaaa' heard first after 3 epochs, 'bbbb' pruned after 1."""
    root = Location.parse(tmp_path)
    run = SearchRun(root)
    write_probe(run, probe_acc)
    sink, progress = ParquetSink(root, max_epochs=3), SearchProgress(root, 2, 3, live=False)
    progress.setup(total_num_samples=2)
    for trial_id, accs in (("aaaa", [0.6, 0.8, 0.9]), ("bbbb", [0.9])):
        trial = SimpleNamespace(trial_id=trial_id, config={"lr": 0.01 if trial_id == "aaaa" else 0.02}, error_file=None, status="RUNNING")
        for callback in (sink, progress):
            callback.on_trial_start(0, [], trial)
            for epoch, acc in enumerate(accs, start=1):
                callback.on_trial_result(0, [], trial, {"epoch": epoch, "train_loss": 1.0, "val_loss": 1.0, "val_acc": acc,
                                                        "scheduled_lr": 0.01, "epoch_seconds": 1.0, "trainable_params": 10,
                                                        "diverged": False})
            callback.on_trial_complete(0, [], trial)
    sink.on_experiment_end([])
    return run, progress


def test_progress_summary_report_and_export_name_the_same_best_trial_on_a_tie(tmp_path, capsys):
    run, progress = search(tmp_path, probe_acc=0.5)
    res = load_results(run)
    best = progress._leader()[1]
    assert best == "bbbb", "equal accuracy: the trial that needed fewer epochs"
    assert summarize(run.root).best["trial_id"] == best
    assert leaderboard(res).iloc[0]["trial_id"] == best
    assert pick_trial(res, None, run)["trial_id"] == best
    assert shipped_note(res, run) == f"tune-tl export takes trial {best}: the best trial."


@pytest.mark.parametrize("aaaa_again, winner, why", [
    (0.7, PROBE, "a probe above the best mean over seeds (--recheck)"),  # the best mean is 0.767: the probe's 0.85 is above it
    (0.95, "aaaa", "the best mean over seeds (--recheck)"),
])
def test_after_a_recheck_the_printout_the_report_and_export_ship_the_same_trial_a_probe_included(tmp_path, capsys, monkeypatch,
                                                                                                aaaa_again, winner, why):
    run, _ = search(tmp_path, probe_acc=0.85)

    def recheck_top(path, k, space=None):  # the re-runs' rows, as recheck_top writes them, without training
        rows = [{"trial_id": t, "seed": s, "best_val_acc": aaaa_again if t == "aaaa" else 0.7, "best_epoch": 1}
                for t in ("aaaa", "bbbb") for s in (1, 2)]
        write_table_atomic(rows, RECHECK_SCHEMA, run.recheck_dir)
        return recheck_table(run.trials(), run.recheck())

    monkeypatch.setattr(recheck_module, "recheck_top", recheck_top)
    _print_recheck(run.root, 2, None)
    printed = capsys.readouterr().out.splitlines()[-1]
    res = load_results(run)
    assert printed.startswith(f"Winner: {winner} (") and printed.endswith("tune-tl export takes it)")
    assert pick_trial(res, None, run)["trial_id"] == shipped_row(res.trials, run.recheck())["trial_id"] == winner
    assert shipped_note(res, run) == f"tune-tl export takes trial {winner}: {why}."


def test_live_rows_are_ordered_as_the_leaderboard_orders_rows():
    rows = [{"trial_id": "b", "best_val_acc": 0.9, "epochs_run": 3}, {"trial_id": "c", "best_val_acc": 0.9, "epochs_run": 1},
            {"trial_id": "a", "best_val_acc": 0.9, "epochs_run": 1}, {"trial_id": "d", "best_val_acc": 0.8, "epochs_run": 1}]
    assert best_of(rows)["trial_id"] == "a" and best_of([]) is None
    table = pd.DataFrame([{**r, "status": "completed"} for r in rows])
    assert best_of(rows)["trial_id"] == shipped_row(table)["trial_id"]
    with pytest.raises(KeyError):
        best_of([{"trial_id": "a"}])
