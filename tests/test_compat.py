"""The private Ray and Optuna internals tune_tl relies on are those of the installed versions; when one
changes, the accessor fails with a message that names the version and the internal."""

import numpy as np
import optuna
import pytest
import ray
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import TPESampler
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tune_tl.compat import (
    AshaSettings,
    InternalsChanged,
    TPESamplerWithCost,
    asha_bracket,
    asha_rungs,
    asha_settings,
    check_internals,
    check_tpe_internals,
    count_stopped,
    distribution_contains,
    forget_trial,
    max_cluster_resources,
    record_in_bracket,
    set_asha_rungs,
    set_trial_user_attr,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def asha(**kwargs):
    return ASHAScheduler(**{"time_attr": "epoch", "metric": "val_acc", "mode": "max", "max_t": 4, "grace_period": 1,
                            "reduction_factor": 2, **kwargs})


def test_every_private_internal_tune_tl_uses_is_there_in_the_installed_ray_and_optuna():
    check_internals()  # fails naming the Ray or Optuna version when an upgrade changed one


def test_asha_settings_and_rungs_are_what_the_scheduler_was_built_with():
    assert asha_settings(asha(mode="min")) == AshaSettings("epoch", "val_acc", -1.0, 4, True)
    assert asha_rungs(asha()) == [1, 2, 4]
    assert asha_rungs(asha(max_t=9, reduction_factor=3)) == [1, 3, 9]


def test_results_recorded_in_the_bracket_set_the_cutoff_asha_applies_to_the_next_trial():
    scheduler = asha()
    bracket = asha_bracket(scheduler)
    decisions = [record_in_bracket(bracket, trial_id, 1, value) for trial_id, value in (("a", 0.9), ("b", 0.8), ("c", 0.95))]
    assert decisions == [TrialScheduler.CONTINUE, TrialScheduler.STOP, TrialScheduler.CONTINUE], "b is below a, c above"
    assert record_in_bracket(bracket, "d", 1, 0.1) == TrialScheduler.STOP, "below the top half at rung 1"
    assert sorted(asha_bracket(scheduler)._rungs[-1][1]) == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="single bracket"):
        asha_bracket(asha(brackets=2))


def test_count_stopped_adds_one_to_rays_counter():
    scheduler = asha()
    count_stopped(scheduler)
    count_stopped(scheduler)
    assert scheduler._num_stopped == 2


@pytest.mark.processes  # starts Ray (the session's runtime and its workers): not the fast tier
@pytest.mark.slow
def test_the_autoscaling_limits_of_a_local_ray_are_readable(ray_local):
    limits = max_cluster_resources()  # a local instance has no autoscaler config
    assert limits is None or isinstance(limits, dict)


def test_a_user_attribute_is_set_on_a_trial_that_is_not_the_callers(tmp_path):
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study.ask()
    set_trial_user_attr(study, study.trials[0], "tune_tl_status", "orphaned")
    reloaded = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert reloaded.trials[0].user_attrs == {"tune_tl_status": "orphaned"}


def test_distribution_contains_checks_range_step_and_choices():
    assert distribution_contains(FloatDistribution(1e-4, 1e-1, log=True), 1e-2)
    assert not distribution_contains(FloatDistribution(1e-4, 1e-1, log=True), 0.5)
    assert distribution_contains(IntDistribution(16, 64, step=16), 32) and not distribution_contains(IntDistribution(16, 64, step=16), 40)
    assert distribution_contains(CategoricalDistribution(["adamw", "sgd"]), "sgd")
    with pytest.raises(ValueError):
        distribution_contains(CategoricalDistribution(["adamw", "sgd"]), "adam")


def test_a_changed_ray_internal_fails_naming_the_installed_ray_version():
    scheduler = asha()
    del scheduler._brackets
    with pytest.raises(InternalsChanged, match=rf"ray {ray.__version__}: \w+Scheduler has no attribute _brackets; tune_tl/compat.py"):
        asha_rungs(scheduler)


def test_a_changed_optuna_internal_fails_naming_the_installed_optuna_version(monkeypatch):
    monkeypatch.delattr(FloatDistribution, "_contains")
    monkeypatch.delattr(BaseDistribution, "_contains")
    with pytest.raises(InternalsChanged, match=rf"optuna {optuna.__version__}: FloatDistribution has no attribute _contains"):
        distribution_contains(FloatDistribution(0.0, 1.0), 0.5)
    with pytest.raises(InternalsChanged, match=r"installed optuna|install optuna==5\.1\.\*"):
        check_internals()


def test_the_tpe_internals_the_cost_aware_sampler_overrides_are_those_of_the_installed_optuna():
    check_tpe_internals()  # fails naming the Optuna version when an upgrade changed them


def test_a_changed_tpe_internal_fails_with_a_message_naming_the_optuna_version(monkeypatch):
    monkeypatch.setattr(TPESampler, "_compute_acquisition_func", lambda self, samples, estimators: None)
    with pytest.raises(InternalsChanged, match=rf"optuna {optuna.__version__}: TPESampler._compute_acquisition_func"):
        check_tpe_internals()


def mean_x(sampler, trials=40):
    """Mean x TPE proposes after its start-up on an objective that does not depend on x (only noise)."""
    noise = np.random.default_rng(0)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0) * 0 + noise.normal(), n_trials=trials)
    return np.mean([t.params["x"] for t in study.trials[10:]])


def test_with_nothing_to_gain_from_x_the_cost_aware_tpe_proposes_the_cheap_end():
    plain = mean_x(TPESampler(seed=1, n_startup_trials=10))
    costed = mean_x(TPESamplerWithCost(lambda p: float(np.exp(8 * p["x"])), seed=1, n_startup_trials=10))
    assert costed < 0.2 < plain


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # group=True
def test_a_group_s_candidates_are_scored_beside_the_values_already_chosen_for_the_trial():
    seen = []

    def cost(params):
        seen.append(dict(params))
        return 1.0 + params.get("k", 0) * (params.get("policy") == "prefix")

    def objective(trial):
        policy = trial.suggest_categorical("policy", ["prefix", "full"])
        k = trial.suggest_int("k", 0, 9) if policy == "prefix" else 0
        return k + trial.suggest_float("lr", 0.0, 1.0)

    sampler = TPESamplerWithCost(cost, seed=0, n_startup_trials=4, multivariate=True, group=True)
    optuna.create_study(sampler=sampler).optimize(objective, n_trials=12)
    scored_k = [p for p in seen if "k" in p]
    assert scored_k and all("policy" in p and "lr" in p for p in scored_k)


def test_new_rungs_replace_the_bracket_s_in_place_and_a_forgotten_trial_leaves_the_books():
    asha = ASHAScheduler(time_attr="t", metric="val_acc", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    bracket = asha_bracket(asha)
    set_asha_rungs(asha, [10.0, 30.0, 90.0], max_t=90.0)
    assert asha_bracket(asha) is bracket and asha_rungs(asha) == [10.0, 30.0, 90.0] and asha_settings(asha).max_t == 90.0
    asha._trial_info["t1"] = bracket  # what on_trial_add records
    forget_trial(asha, "t1")
    forget_trial(asha, "never-added")
    assert "t1" not in asha._trial_info
