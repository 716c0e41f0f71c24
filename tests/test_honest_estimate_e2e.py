"""A real tiny search over an image folder with a ``test/`` split: the test images never reach a trial, a sampler,
the scheduler or the ranking; the shipped model is scored on them once at the end; an ensemble is chosen on val."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from spaces import TINY_CNN, write_tiny_space

import tune_tl.search.run
from tests.data.images import write_split_folder
from tune_tl.analysis.predict import predict
from tune_tl.cli import main
from tune_tl.models import build_backbone
from tune_tl.search.held_out import score_on_test, without_test
from tune_tl.search.summary import format_summary, summarize
from tune_tl.search.val_predictions import class_probabilities, read_val_predictions, state_model
from tune_tl.store.ranking import ranked
from tune_tl.store.search_run import VAL_PROBS, SearchRun
from tune_tl.store.storage import Location
from tune_tl.training.batches import frozen_dtype

#: One trial at a time, no time budget: a seeded search is then reproducible (tests/test_reproducible_e2e.py).
ARGS = ["--concurrency", "1", "--time-budget", "none"]
#: An MLP head on the frozen backbone: a linear one is what the probe fitted exactly, and is never started.
PARAMS = {"freeze_blocks": "all", "lr": {"low": 1.0e-3, "high": 3.0e-2, "log": True}, "head": "mlp", "head_hidden": 16}


@pytest.fixture(scope="module")
def searched(ray_local, tmp_path_factory):
    """One search over train/val/test folders; what the Tuner was handed is kept."""
    tmp = tmp_path_factory.mktemp("honest")
    photos = write_split_folder(tmp / "photos", train=8, val=5, test=4)
    space = write_tiny_space(tmp, data={"source": None}, backbone=TINY_CNN, budget={"samples": 2, "max_epochs": 1}, params=PARAMS)
    handed = {}
    build_tuner = tune_tl.search.run.build_tuner

    def keep_what_the_tuner_gets(plan, options, context, root, study):
        handed.update(context=context)
        return build_tuner(plan, options, context, root, study)

    def keep_what_the_driver_keeps(prepared):
        kept, tests = without_test(prepared)
        handed.update(prepared=kept, tests=tests)
        return kept, tests

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tune_tl.search.run, "build_tuner", keep_what_the_tuner_gets)
        mp.setattr(tune_tl.search.run, "without_test", keep_what_the_driver_keeps)
        assert main(["search", str(space), "--data", str(photos), *ARGS, "--output", str(tmp / "out"), "--name", "s"]) == 0
    # The same search with the test split removed: what every choice saw must not change.
    shutil.move(photos / "test", tmp / "held-out")  # kept for predict
    assert main(["search", str(space), "--data", str(photos), *ARGS, "--output", str(tmp / "out"), "--name", "no-test"]) == 0
    return tmp / "out" / "s", handed


@pytest.mark.slow
def test_no_test_image_travels_to_the_trials_and_no_table_holds_a_test_figure(searched):
    root, handed = searched
    for context in (handed["context"], handed["prepared"].context):
        for split in context.data.splits.values():
            assert split.test_x is None and split.test_y is None
    assert handed["prepared"].loaded.data.splits[32].test_y is not None, "the driver keeps them, for the one score at the end"
    run = SearchRun(root)
    assert not [c for c in run.trials().columns if "test" in c]
    assert not [c for c in run.epochs().columns if "test" in c]


@pytest.mark.slow
def test_the_ranking_and_the_ensemble_are_the_same_with_the_test_split_removed(searched):
    root, _ = searched
    with_test, without = SearchRun(root), SearchRun(root.parent / "no-test")
    columns = ["probe", "status", "best_val_acc", "best_epoch", "lr", "resolution", "head"]
    a, b = ranked(with_test.trials()), ranked(without.trials())
    # Ties on accuracy and epochs go to the smaller trial_id, which Ray draws at random: compare within ties by config.
    def order(frame):
        return frame[columns].sort_values(["best_val_acc", "lr"], ascending=[False, True], kind="stable").reset_index(drop=True)

    pd.testing.assert_frame_equal(order(a), order(b))
    probes = [t for t in a["trial_id"] if t.startswith("probe-")]
    assert probes == [t for t in b["trial_id"] if t.startswith("probe-")]
    first, second = with_test.metadata["ensemble"], without.metadata["ensemble"]
    assert first["val_acc"] == second["val_acc"] and len(first["members"]) == len(second["members"])
    assert "test" not in without.metadata
    assert "no test split for an honest figure: put held-out images in <data>/test/<class>/" in format_summary(summarize(without.root))


@pytest.mark.slow
def test_the_shipped_model_is_scored_on_test_once_and_the_summary_shows_it_next_to_val(searched):
    root, _ = searched
    meta = json.loads((root / "search.json").read_text())
    test = meta["test"]
    assert test["test_images"] == 12 and 0.0 <= test["test_acc"] <= 1.0
    summary = summarize(Location.parse(root))
    assert test["trial_id"] == summary.best["trial_id"]
    text = format_summary(summary)
    assert (f"val {summary.best['best_val_acc']:.4f} (best of {summary.ranked_trials} trials: optimistic) · "
            f"test {test['test_acc']:.4f} on 12 images (never used to choose)") in text


@pytest.mark.slow
def test_every_candidates_val_probabilities_reproduce_its_recorded_accuracy(searched):
    root, _ = searched
    run = SearchRun(root)
    kept = read_val_predictions(run)
    trials = run.trials().set_index("trial_id")
    assert any(t.startswith("probe-") for t in kept.probs) and len(kept.probs) >= 2
    assert len(kept.labels) == 15
    for trial_id, probs in kept.probs.items():
        assert probs.shape == (15, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-4)
        assert (probs.argmax(1) == kept.labels).mean() == pytest.approx(trials.loc[trial_id, "best_val_acc"])
    table = pd.read_parquet(root / "val_predictions")
    assert list(table.columns) == ["trial_id", "row", "label", "probs"]


@pytest.mark.slow
def test_a_kept_trial_s_val_probabilities_are_its_best_epoch_s_as_saved_with_its_checkpoint_and_match_a_forward_pass(searched):
    # Saved while the trial trained, they spare the end of the search a forward pass over val per kept trial.
    root, handed = searched
    run = SearchRun(root)
    kept = read_val_predictions(run)
    rows = run.trials().set_index("trial_id", drop=False)
    trial = next(t for t in kept.probs if not t.startswith("probe-"))
    state = run.best_checkpoint(trial)
    assert np.array_equal(state[VAL_PROBS].numpy(), kept.probs[trial])
    split = handed["prepared"].context.data.splits[int(rows.loc[trial, "resolution"])]
    forward = class_probabilities(state_model(run, rows.loc[trial].to_dict(), state), split, "val", torch.device("cpu"))
    # Trained on the probe's pooled features, computed in bfloat16 where the CPU runs it natively (batches.frozen_dtype):
    # then the float32 network's probabilities differ in the third decimal (measured: up to 4e-3).
    atol = 1e-4 if frozen_dtype(torch.device("cpu")) == torch.float32 else 1e-2
    assert np.allclose(forward, kept.probs[trial], atol=atol), "what export's network predicts on val"


@pytest.mark.slow
def test_the_ensemble_is_recorded_and_tune_tl_ensemble_chooses_it_again(searched, capsys):
    root, _ = searched
    first = json.loads((root / "search.json").read_text())["ensemble"]
    assert first["val_acc"] >= first["best_single_val_acc"]
    assert sum(m["weight"] for m in first["members"]) == pytest.approx(1.0, abs=1e-4)
    capsys.readouterr()
    assert main(["ensemble", str(root)]) == 0
    out = capsys.readouterr().out
    assert json.loads((root / "search.json").read_text())["ensemble"] == first
    assert "Ensemble" in out and first["members"][0]["trial_id"] in out


@pytest.mark.slow
def test_an_exported_ensemble_of_a_probe_and_a_trial_predicts_val_as_its_probabilities_say(searched, tmp_path):
    root, handed = searched
    search = Path(shutil.copytree(root, tmp_path / "s", symlinks=True))
    run = SearchRun(search)
    kept = read_val_predictions(run)
    probe = next(t for t in kept.probs if t.startswith("probe-"))
    trial = next(t for t in kept.probs if not t.startswith("probe-"))
    weights = {probe: 0.75, trial: 0.25}  # a mixed ensemble, set by hand so that both kinds of member are exported
    expected = (sum(w * kept.probs[t] for t, w in weights.items()).argmax(1) == kept.labels).mean()
    run.update_metadata(ensemble={**run.metadata["ensemble"], "members": [{"trial_id": t, "weight": w} for t, w in weights.items()],
                                  "val_acc": float(expected)})
    shutil.rmtree(search / probe, ignore_errors=True)  # retention may have deleted a probe's weights: rebuilt from its head
    out = tmp_path / "ensemble-model"
    assert main(["export", str(search), "--ensemble", "--to", str(out)]) == 0
    assert sorted(p.name for p in (out / "members").iterdir()) == sorted(weights)
    rows = predict(out, [root.parent.parent / "photos" / "val"])
    assert len(rows) == len(kept.labels)
    assert np.mean([label == Path(path).parent.name for path, label, _ in rows]) == pytest.approx(expected)
    # Its test figure (scored once when a search ends, never to choose) is what the exported ensemble does on test/.
    record = score_on_test(run, handed["tests"], {TINY_CNN["name"]: build_backbone(TINY_CNN["name"], "imagenet")})
    on_test = predict(out, [root.parent.parent / "held-out"])
    assert record["ensemble_test_acc"] == pytest.approx(np.mean([label == Path(path).parent.name for path, label, _ in on_test]))
    assert f"test {record['ensemble_test_acc']:.4f} vs the shipped trial's {record['test_acc']:.4f}" in format_summary(
        summarize(Location.parse(search)))


@pytest.mark.slow
def test_export_ships_the_ensemble_by_default_only_when_it_beats_the_best_single_on_val_by_a_point(searched, tmp_path, capsys):
    root, _ = searched
    search = Path(shutil.copytree(root, tmp_path / "s", symlinks=True))
    run = SearchRun(search)
    members = [{"trial_id": t, "weight": 0.5} for t in list(read_val_predictions(run).probs)[:2]]
    for gain, ships in ((0.0, False), (0.005, False), (0.01, True)):
        run.update_metadata(ensemble={**run.metadata["ensemble"], "members": members, "best_single_val_acc": 0.6, "val_acc": 0.6 + gain})
        out = tmp_path / f"default-{gain}"
        capsys.readouterr()
        assert main(["export", str(search), "--to", str(out)]) == 0
        assert (out / "ensemble.json").is_file() == ships, gain
        said = "(the default: 1% or more above the best single trial on val; --single exports that trial)"
        assert (said in capsys.readouterr().out) == ships
    assert main(["export", str(search), "--single", "--to", str(tmp_path / "single")]) == 0
    assert not (tmp_path / "single" / "ensemble.json").exists() and (tmp_path / "single" / "model.pt").is_file()
    assert main(["export", str(search), "--single", "--ensemble", "--to", str(tmp_path / "both")]) == 2
    assert not (tmp_path / "both").exists()
