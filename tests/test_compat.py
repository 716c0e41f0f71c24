"""The private Ray/Optuna internals tune_tl relies on are still there, and what is built on them behaves."""

import numpy as np
import optuna
import pytest
from optuna.samplers import TPESampler

from tune_tl.compat import TPESamplerWithCost, check_tpe_internals

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_tpe_internals_the_cost_aware_sampler_overrides_are_those_of_the_installed_optuna():
    check_tpe_internals()  # fails naming the Optuna version when an upgrade changed them


def test_a_changed_tpe_internal_fails_with_a_message_naming_the_optuna_version(monkeypatch):
    monkeypatch.setattr(TPESampler, "_compute_acquisition_func", lambda self, samples, estimators: None)
    with pytest.raises(RuntimeError, match=rf"optuna {optuna.__version__}: TPESampler._compute_acquisition_func"):
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
