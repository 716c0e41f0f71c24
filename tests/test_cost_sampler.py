"""The sampler weighs a candidate by the predicted cost of the whole config it stands for."""

import math
import pickle

import numpy as np
import optuna
import pytest

from tune_tl.compat import TPESamplerWithCost, cooled_acquisition
from tune_tl.config import load_space
from tune_tl.config.params import TrialConfig
from tune_tl.config.space import parse_space_text
from tune_tl.search.admission import BudgetClock
from tune_tl.search.cost_sampler import CandidateCost, CostCooling
from tune_tl.search.plan import plan_for
from tune_tl.search.sampler import make_sampler
from tune_tl.training.cost_model import CostModel

LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BLOCKS = (1e7, 2e7, 4e7, 4e7, 4e7, 8e7, 8e7, 2e7, 1e7)  # nine blocks, like the Lite models'


def model(resolutions, backbones=LITE[:1], scale=(1.0, 1.4, 2.0)):
    blocks = {b: {r: tuple(f * s * (r / 32) ** 2 for f in BLOCKS) for r in resolutions} for b, s in zip(backbones, scale, strict=False)}
    return CostModel(blocks, dict.fromkeys(backbones, 1280), num_classes=10, train_images=1437, val_images=360)


def test_a_candidate_takes_the_space_s_fixed_values_then_the_defaults():
    spec = load_space()  # resolution 32 and batch size 64 are fixed: Ray gets them as constants, Optuna never sees them
    cost = CandidateCost.for_search(plan_for(spec, 9, cost_model=model([32])))
    config = cost.config({"freeze_policy": "head_only", "lr": 0.003})
    assert (config.resolution, config.batch_size, config.backbone, config.lr, config.head) == (32, 64, LITE[0], 0.003, "linear")
    assert cost({"freeze_policy": "head_only"}) < cost({"freeze_policy": "prefix", "freeze_blocks": 8}) < cost({"freeze_policy": "full"})
    full = TrialConfig(backbone=LITE[0], resolution=32, freeze_policy="full")
    assert cost({"freeze_policy": "full"}) == cost.model.trial_cost(full, spec.budget.max_epochs)


def test_with_a_choice_of_backbones_a_candidate_is_priced_at_its_own_backbone_s_native_size():
    spec = parse_space_text("backbone: {name: [efficientnet_lite0, efficientnet_lite1, efficientnet_lite2]}\n"
                            "params: {resolution: native, freeze_policy: [full, head_only]}\n", "native.yaml")
    cost = CandidateCost.for_search(plan_for(spec, 9, cost_model=model([224, 240, 260], LITE)))
    assert [cost.config({"backbone": b}).resolution for b in LITE] == [224, 240, 260]
    assert cost({"backbone": LITE[0], "freeze_policy": "full"}) < cost({"backbone": LITE[2], "freeze_policy": "full"})


def test_tpe_weighs_cost_when_given_one_and_the_baselines_never_do():
    spec = load_space()
    cost = CandidateCost.for_search(plan_for(spec, 9, cost_model=model([32])))
    assert isinstance(make_sampler("tpe", spec, cost), TPESamplerWithCost)
    assert type(make_sampler("tpe-gain", spec, cost)) is optuna.samplers.TPESampler
    assert type(make_sampler("tpe-classic", spec, cost)) is optuna.samplers.TPESampler
    assert isinstance(make_sampler("random", spec, cost), optuna.samplers.RandomSampler)


def test_the_cost_aware_sampler_survives_pickling_as_ray_saves_the_searcher():
    spec = load_space()
    sampler = make_sampler("tpe", spec, CandidateCost.for_search(plan_for(spec, 9, cost_model=model([32]))))
    study = optuna.create_study(sampler=pickle.loads(pickle.dumps(sampler)), direction="maximize")
    study.optimize(lambda t: t.suggest_float("lr", 3e-4, 1e-2, log=True)
                   + (t.suggest_categorical("freeze_policy", ["full", "head_only"]) == "full"), n_trials=6)
    assert len(study.trials) == 6


def test_a_python_space_s_candidates_are_priced_at_its_largest_declared_resolution(tmp_path):
    (tmp_path / "space.py").write_text("SETTINGS = {'resolutions': [32, 48]}\n"
                                       "def space(trial):\n    trial.suggest_categorical('freeze_policy', ['full', 'head_only'])\n"
                                       "    return {'resolution': 48}\n")
    cost = CandidateCost.for_search(plan_for(load_space(tmp_path / "space.py"), 9, cost_model=model([32, 48])))
    assert cost.config({"freeze_policy": "full"}).resolution == 48


def test_a_candidate_the_cost_model_cannot_price_is_chosen_by_expected_gain_and_the_search_goes_on(caplog):
    sampler = TPESamplerWithCost(lambda params: 1 / 0, seed=0, n_startup_trials=2)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    assert len(study.trials) == 4 and "could not price the candidates (ZeroDivisionError" in caplog.text


def test_with_alpha_zero_the_cost_aware_sampler_chooses_exactly_what_plain_tpe_chooses():
    def objective(t):
        return t.suggest_float("x", 0, 1) + (t.suggest_categorical("policy", ["full", "head_only"]) == "full")

    settings = dict(seed=3, n_startup_trials=4)
    cooled = optuna.create_study(sampler=TPESamplerWithCost(lambda p: 1.0 + 99 * (p["policy"] == "full"), lambda: 0.0, **settings))
    plain = optuna.create_study(sampler=optuna.samplers.TPESampler(**settings))
    cooled.optimize(objective, n_trials=14)
    plain.optimize(objective, n_trials=14)
    assert [t.params for t in cooled.trials] == [t.params for t in plain.trials]


def test_a_cheap_candidate_with_a_worse_density_ratio_wins_at_alpha_one_and_not_once_alpha_is_small():
    gain, costs = np.array([1.0, 0.2]), np.array([100.0, 1.0])  # candidate 0: better ratio, 100 × the cost
    assert np.argmax(cooled_acquisition(gain, costs, alpha=1.0)) == 1
    assert np.argmax(cooled_acquisition(gain, costs, alpha=0.1)) == 0
    assert np.argmax(cooled_acquisition(gain, costs, alpha=0.0)) == 0
    assert np.argmax(cooled_acquisition(gain, np.array([math.inf, 1.0]), alpha=0.0)) == 1  # infinite cost: never, whatever α


def test_cost_cooling_falls_from_one_to_zero_as_the_time_budget_or_else_the_trial_count_is_spent():
    clock = BudgetClock(seconds=100.0, samples=10)
    assert CostCooling(clock)() == pytest.approx(1.0, abs=0.01)
    clock.started -= 50
    assert CostCooling(clock)() == pytest.approx(0.5, abs=0.01)
    clock.started -= 80
    assert CostCooling(clock)() == 0.0
    by_trials = BudgetClock(seconds=None, samples=10, trials_started=3)
    assert CostCooling(by_trials)() == pytest.approx(0.7)


def test_the_sampler_cools_as_the_clock_says():
    spec = load_space()
    clock = BudgetClock(seconds=None, samples=4)
    sampler = make_sampler("tpe", spec, lambda p: 1.0, CostCooling(clock))
    clock.trials_started = 4
    assert sampler._cooling() == 0.0
