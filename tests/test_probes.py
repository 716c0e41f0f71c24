"""Stage 0: a linear probe per backbone is the search's first answer, a real trial, and the head fine-tunes start from."""

import dataclasses
import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.data.images import write_split_folder
from tune_tl.cli import main
from tune_tl.config import parse_settings
from tune_tl.config.params import TrialConfig
from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import Split
from tune_tl.search import probes as probes_module
from tune_tl.search.plan import resolve_plan
from tune_tl.search.probe_budget import MIN_PER_CLASS, PROBE_SHARE, ProbeBudget, stratified_subset
from tune_tl.search.probes import run_probes, trials_context
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location
from tune_tl.training.batches import FROZEN_DTYPE_ENV
from tune_tl.training.context import PreparedSearch, TrialContext, prepare_context
from tune_tl.training.evaluate import evaluate_split
from tune_tl.training.linear_probe import fit_linear_probe, fit_start_head, measure_probe
from tune_tl.training.recipe import build_trial


@pytest.mark.parametrize("classes", [2, 4])
def test_the_probe_as_a_linear_layer_predicts_what_the_fitted_scikit_learn_pipeline_predicts(classes):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, 300)
    features = rng.normal(size=(300, 20)) * rng.uniform(0.1, 10, 20) + rng.normal(size=20)  # unstandardised on purpose
    features[np.arange(300), labels] += 2.0
    probe = fit_linear_probe(features, labels, classes, seed=0)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=probe.C, max_iter=2000)).fit(features, labels)
    with torch.no_grad():
        logits = probe.as_linear()(torch.tensor(features, dtype=torch.float32)).numpy()
    assert (logits.argmax(1) == reference.predict(features)).mean() > 0.99
    assert probe.weight.shape == (classes, 20)


def test_a_class_missing_from_the_train_split_gets_a_row_that_never_wins():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)
    probe = fit_linear_probe(rng.normal(size=(60, 5)) + labels[:, None], labels, num_classes=3, seed=0)
    assert probe.weight.shape == (3, 5) and not (probe.logits(rng.normal(size=(50, 5))).argmax(1) == 2).any()


@pytest.fixture(scope="module")
def digits():
    spec = parse_settings({"seed": 0, "budget": {"samples": 1, "max_epochs": 1}, "params": {"resolution": 32}}, "test", allow_params=True)
    return prepare_context(spec)


def test_a_fine_tune_that_starts_from_the_probe_scores_the_probes_accuracy_before_its_first_step(digits, monkeypatch):
    monkeypatch.setenv(FROZEN_DTYPE_ENV, "float32")  # the probe's features as the network computes them (not bfloat16's)
    split = stratified_subset(digits.context.data.splits[32], 400, 200, seed=0)  # a probe on every digit costs 4x the time
    measured = measure_probe(digits.backbones["efficientnet_lite0"], split, 10, seed=0, device="cpu")
    heads = {("efficientnet_lite0", 32): (torch.from_numpy(measured.probe.weight), torch.from_numpy(measured.probe.bias))}
    context = digits.context.__class__(**{**digits.context.__dict__, "probe_heads": heads})
    norms = {}
    for init, expected in (("probe", measured.val_acc), ("random", None)):
        cfg = TrialConfig.from_dict({"backbone": "efficientnet_lite0", "resolution": 32, "freeze_policy": "full", "head_init": init})
        plan = build_trial(cfg, context, "cpu")
        acc = evaluate_split(plan.model, split, Normaliser(plan.fit.mean, plan.fit.std)).acc
        norms[init] = float(plan.model.head.weight.norm())
        if expected is None:
            assert acc < 0.5, "a random head is near chance before training"
        else:
            assert acc == pytest.approx(expected, abs=1 / len(split.val_y)), "same features, same head: same predictions"
    # The probe's own weights are two orders larger (fitted on standardised features); scaled to a fresh head's norm,
    # its predictions are the same and its first gradients do not wreck the backbone.
    assert float(heads[("efficientnet_lite0", 32)][0].norm()) > 50 * norms["random"]
    assert norms["probe"] == pytest.approx(norms["random"], rel=1e-4)


SPACE = """
seed: 0
data: {source: imagefolder}
backbone: {name: [efficientnet_lite0, efficientnet_lite1], weights: imagenet}
budget: {samples: 2, max_epochs: 1, grace_period: 1, reduction_factor: 2}
params:
  resolution: 32
  batch_size: 16
  freeze_blocks: {low: 6, high: 8}
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
  head: linear
"""


@pytest.mark.slow
def test_probes_are_trials_the_study_learns_from_and_export_writes_a_model_that_predicts_their_accuracy(ray_local, tmp_path, capsys):
    photos = write_split_folder(tmp_path / "photos", train=8, val=4)
    (tmp_path / "space.yaml").write_text(SPACE)
    assert main(["search", str(tmp_path / "space.yaml"), "--data", str(photos), "--output", str(tmp_path / "out"), "--name", "p",
                 "--time-budget", "none", "--concurrency", "2"]) == 0
    root = tmp_path / "out" / "p"
    trials, epochs = pd.read_parquet(root / "trials"), pd.read_parquet(root / "epochs")
    probes = trials[trials["probe"]]
    assert sorted(probes["trial_id"]) == ["probe-efficientnet_lite0-32", "probe-efficientnet_lite1-32"]
    assert (probes["status"] == "completed").all() and (probes["epochs_run"] == 1).all()
    assert len(trials[~trials["probe"]]) == 2, "probes come on top of budget.samples"
    assert set(epochs.loc[epochs["probe"], "phase"]) == {"probe"} and (epochs.loc[~epochs["probe"], "probe"] == False).all()  # noqa: E712
    out = capsys.readouterr().out
    assert "2 linear probe(s)" in out and "Best so far: 1 min" in out

    record = json.loads((root / "search.json").read_text())
    best_probe = max(record["probes"], key=lambda p: (p["val_acc"], p["logme"]))  # ties go to the higher LogME
    assert record["backbone"]["name"][0] == best_probe["backbone"], "the best probe's backbone is listed (and textbook-started) first"
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{root / 'optuna.db'}")
    seeded = [t for t in study.trials if t.user_attrs.get("probe")]
    assert {t.user_attrs["ray_trial_id"] for t in seeded} == set(probes["trial_id"])
    assert all(t.state == optuna.trial.TrialState.COMPLETE and set(t.params) == {"backbone"} for t in seeded)

    trial_id = probes.sort_values("best_val_acc").iloc[-1]["trial_id"]
    assert main(["export", str(root), "--trial", trial_id, "--to", str(tmp_path / "model")]) == 0
    predictions = tmp_path / "val.csv"
    assert main(["predict", str(tmp_path / "model"), str(photos / "val"), "--output", str(predictions)]) == 0
    rows = pd.read_csv(predictions)
    accuracy = float((rows["label"] == rows["path"].map(lambda p: Path(p).parent.name)).mean())
    assert accuracy == pytest.approx(float(probes.set_index("trial_id").loc[trial_id, "best_val_acc"]))


@pytest.fixture(scope="module")
def two_backbones(tmp_path_factory):
    photos = write_split_folder(tmp_path_factory.mktemp("photos"), train=12, val=4)
    spec = parse_settings({"seed": 0, "data": {"source": "imagefolder", "path": str(photos)},
                           "backbone": {"name": ["efficientnet_lite0", "efficientnet_lite1"]},
                           "budget": {"samples": 1, "max_epochs": 1, "time": 1}, "params": {"resolution": 32}}, "test", allow_params=True)
    return spec, prepare_context(spec)


def test_a_time_budget_too_short_for_any_probe_still_probes_the_cheapest_on_a_subset_and_logs_the_skipped_one(two_backbones, tmp_path,
                                                                                                              caplog):
    spec, prepared = two_backbones
    run = SearchRun(Location.parse(tmp_path))
    with caplog.at_level(logging.INFO, logger="tune_tl.search.probes"):
        probes = run_probes(resolve_plan(spec, prepared), prepared, run, cache=None, deadline=time.monotonic() + 1)
    assert [p.backbone for p in probes] == ["efficientnet_lite0"]  # the cheaper of the two, and only it
    split = prepared.context.data.splits[32]
    assert probes[0].subset is not None and probes[0].subset < len(split.train_y)
    assert run.checkpoint_paths(probes[0].trial_id), "a checkpoint tune-tl export writes as a model folder"
    assert (run.trials()["trial_id"] == probes[0].trial_id).any()
    skipped = [r.getMessage() for r in caplog.records if "efficientnet_lite1" in r.getMessage()]
    assert skipped and "probe budget: the probe of efficientnet_lite1 at 32 px is predicted to take" in skipped[0]
    assert "s left of the probes' share (33% of the time budget, 0 s)" in skipped[0]


def test_with_room_for_every_probe_each_runs_on_all_images_cheapest_first(two_backbones, tmp_path):
    spec, prepared = two_backbones
    roomy = dataclasses.replace(spec, budget=dataclasses.replace(spec.budget, time=3600))
    run = SearchRun(Location.parse(tmp_path))
    probes = run_probes(resolve_plan(roomy, prepared), prepared, run, cache=None)
    assert [(p.backbone, p.subset) for p in probes] == [("efficientnet_lite0", None), ("efficientnet_lite1", None)]
    # Each probe keeps its own head (its predictions) and, beside it, the head fine-tunes of its backbone start from.
    heads, starts = run.probe_heads(), run.start_heads()
    assert set(heads) == set(starts) == {(p.backbone, 32) for p in probes}
    assert all(starts[k][0].shape == heads[k][0].shape and not torch.equal(starts[k][0], heads[k][0]) for k in heads)


def test_the_start_head_weighs_the_features_that_vary_and_predicts_like_the_probe():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    features = rng.normal(size=(300, 20))
    features[np.arange(300), labels] += 2.0
    features[:, 10] = 1e-4 * (labels + rng.normal(size=300))  # near-constant, and it carries the labels too
    probe, start = fit_linear_probe(features, labels, 3, seed=0), fit_start_head(features, labels, 3, seed=0)
    # Standardised, the near-constant feature weighs like any other, so on raw features its weight is ~10^4 times theirs:
    # a fine-tune that moves it by a hair moves the probe's logits by a lot. One scale for all keeps its weight small.
    assert np.abs(probe.weight[:, 10]).max() > 100 * np.abs(probe.weight[:, :3]).max()
    assert np.abs(start.weight[:, 10]).max() < np.abs(start.weight[:, :3]).max()
    assert start.accuracy(features, labels) >= probe.accuracy(features, labels) - 0.05


def test_a_search_from_before_start_heads_were_kept_starts_its_fine_tunes_from_its_probes_heads(tmp_path):
    run = SearchRun(Location.parse(tmp_path))
    probe, start = (torch.ones(2, 4), torch.zeros(2)), (torch.full((2, 4), 0.5), torch.zeros(2))
    key = ("efficientnet_lite0", 32)

    def weights(heads):
        return {k: w.tolist() for k, (w, _) in heads.items()}

    run.save_probe_heads({key: probe})  # what a search wrote before 2026-12-07
    assert weights(run.start_heads()) == weights(run.probe_heads()) == {key: probe[0].tolist()}
    run.save_probe_heads({key: probe}, {key: start})
    assert weights(run.probe_heads()) == {key: probe[0].tolist()} and weights(run.start_heads()) == {key: start[0].tolist()}


def test_trials_start_from_the_start_heads_not_the_probes_own(tmp_path):
    run = SearchRun(Location.parse(tmp_path))
    key = ("efficientnet_lite0", 32)
    run.save_probe_heads({key: (torch.ones(2, 4), torch.zeros(2))}, {key: (torch.full((2, 4), 0.5), torch.zeros(2))})
    prepared = PreparedSearch(TrialContext("efficientnet_lite0", {}, data=None, max_epochs=1, seed=0), {}, loaded=None)
    context = trials_context(prepared, run, "cache")
    assert context.probe_heads[key][0].tolist() == [[0.5] * 4] * 2 and context.feature_cache == "cache"


def test_a_stratified_subset_keeps_every_class_in_proportion():
    labels = np.repeat(np.arange(4), [40, 20, 20, 20])
    split = Split(np.zeros((100, 3, 2, 2), np.uint8), labels, np.zeros((8, 3, 2, 2), np.uint8), np.repeat(np.arange(4), 2))
    small = stratified_subset(split, 50, None, seed=0)
    assert np.bincount(small.train_y).tolist() == [20, 10, 10, 10] and len(small.val_y) == 8
    assert np.bincount(stratified_subset(split, 1, 4, seed=0).train_y).tolist() == [MIN_PER_CLASS] * 4
    assert ProbeBudget.for_search(600).allowed == pytest.approx(600 * PROBE_SHARE) and ProbeBudget.for_search(None).fits(1e30)


@pytest.mark.slow
def test_a_time_budget_too_short_for_any_probe_still_ends_with_a_model_to_export(ray_local, tmp_path, capsys):
    photos = write_split_folder(tmp_path / "photos", train=8, val=4)
    (tmp_path / "space.yaml").write_text(SPACE)
    assert main(["search", str(tmp_path / "space.yaml"), "--data", str(photos), "--output", str(tmp_path / "out"), "--name", "tiny",
                 "--time-budget", "1"]) == 0
    root = tmp_path / "out" / "tiny"
    trials = pd.read_parquet(root / "trials")
    assert trials["probe"].all() and len(trials) == 1, "one probe (the cheapest, on a subset), no fine-tune"
    out = capsys.readouterr().out
    assert "The search could not fine-tune" in out
    assert main(["export", str(root), "--to", str(tmp_path / "model")]) == 0
    assert (tmp_path / "model").is_dir()


@pytest.fixture
def three_backbones(tmp_path):
    photos = write_split_folder(tmp_path / "photos", train=8, val=4)
    names = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    spec = parse_settings({"seed": 0, "data": {"source": "imagefolder", "path": str(photos)}, "backbone": {"name": names},
                           "budget": {"samples": 1, "max_epochs": 1, "time": 3600}, "params": {"resolution": 32}}, "test",
                          allow_params=True)
    return spec, prepare_context(spec)


def test_probes_that_do_not_fit_the_share_are_ranked_by_logme_and_only_the_best_is_probed(three_backbones, tmp_path, monkeypatch,
                                                                                             caplog):
    spec, prepared = three_backbones
    answers = iter([True, False])  # the cheapest fits, the next does not (nor, then, the dearer one); the ranking does
    monkeypatch.setattr(ProbeBudget, "fits", lambda self, flops: next(answers, True))
    monkeypatch.setattr(probes_module, "train_images_that_fit", lambda *args: 16)  # two thirds of the 24 train images
    with caplog.at_level(logging.INFO, logger="tune_tl.search.probes"):
        probes = run_probes(resolve_plan(spec, prepared), prepared, SearchRun(Location.parse(tmp_path / "run")), cache=None)
    assert [p.backbone for p in probes][0] == "efficientnet_lite0" and len(probes) == 2
    text = caplog.text
    assert text.count("ranking it by LogME on a stratified subset") == 2
    left_out = ({"efficientnet_lite1", "efficientnet_lite2"} - {probes[1].backbone}).pop()
    assert f"probe budget: {left_out} not probed (LogME" in text and 12 <= probes[1].subset < 24, "on a stratified two thirds"


def test_a_best_ranked_probe_with_time_for_three_quarters_of_train_runs_on_all_of_it_and_keeps_its_boundaries(three_backbones,
                                                                                                             tmp_path, monkeypatch, caplog):
    # A subset probe keeps no freeze-boundary activations: on chest X-rays one on 1,571 of 1,601 images left its
    # backbone's fine-tunes to decode every image in their first epoch (157-201 s against 55 s from the boundary); and
    # the price of a dearer backbone's probe runs a fifth high (probe_budget.WHOLE_SPLIT_SHARE).
    spec, prepared = three_backbones
    answers = iter([True, False])
    monkeypatch.setattr(ProbeBudget, "fits", lambda self, flops: next(answers, True))
    monkeypatch.setattr(probes_module, "train_images_that_fit", lambda *args: 19)  # 79 % of the 24 train images
    with caplog.at_level(logging.INFO, logger="tune_tl.search.probes"):
        probes = run_probes(resolve_plan(spec, prepared), prepared, SearchRun(Location.parse(tmp_path / "run")),
                            cache=str(tmp_path / "cache"))
    assert len(probes) == 2 and probes[1].subset is None
    assert f"probe budget: {probes[1].backbone} is probed on all 24 train images: the time left fits 19 (75% or more)" in caplog.text
    plan = resolve_plan(spec, prepared).with_probed_boundaries(prepared, [(p.backbone, p.resolution) for p in probes if p.subset is None])
    assert plan.cost_model.probed_boundaries.get(probes[1].backbone), "its fine-tunes start from the boundaries it kept"


def test_a_probe_that_did_not_fit_is_not_probed_on_less_than_half_of_train_nor_ranked(three_backbones, tmp_path, monkeypatch, caplog):
    # A probe on a sliver of train scores far below its backbone (and would stand for it in the study): none is better.
    spec, prepared = three_backbones
    answers = iter([True, False])  # the cheapest fits in full, the next does not (nor, then, the dearer one); the ranking would
    monkeypatch.setattr(ProbeBudget, "fits", lambda self, flops: next(answers, True))
    monkeypatch.setattr(ProbeBudget, "left", property(lambda self: 0.05 if self.rate else 1e9))  # 50 ms after the first probe
    with caplog.at_level(logging.INFO, logger="tune_tl.search.probes"):
        probes = run_probes(resolve_plan(spec, prepared), prepared, SearchRun(Location.parse(tmp_path / "run")), cache=None)
    assert [(p.backbone, p.subset) for p in probes] == [("efficientnet_lite0", None)]
    for name in ("efficientnet_lite1", "efficientnet_lite2"):
        assert re.search(rf"probe budget: the probe of {name} at 32 px is predicted to take .*; not probed: that time fits "
                         r"\d+ of its 24 train images, fewer than 50%", caplog.text)
    assert "ranking it" not in caplog.text and "below" not in caplog.text, "no LogME ranking ran"
