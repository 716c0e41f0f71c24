"""Which parameters mattered: fANOVA importances, on trials compared at the same budget.

ASHA stops most trials early, so a pruned trial's best accuracy (after 1 epoch) is not comparable with a
finished one's (after all of them). :func:`same_budget_scores` scores every trial at the deepest epoch
enough trials reached; :func:`parameter_importances` fits Optuna's fANOVA on those scores over several
seeds, so the spread says how far to trust the order.

    >>> imp = parameter_importances(res.trials, res.epochs)   # doctest: +SKIP
    >>> imp.mean                                              # doctest: +SKIP
    {'lr': 0.61, 'freeze_blocks': 0.27, 'head': 0.12}
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.importance import FanovaImportanceEvaluator

from tune_tl.analysis.leaderboard_table import key_params
from tune_tl.config.params import PARAMS
from tune_tl.store.ranking import RANKED_STATUSES

MIN_TRIALS_FOR_IMPORTANCE = 5
#: Below this many trials importances get a plain warning (at 16 trials an image-folder run ranked head_hidden first).
FEW_TRIALS_FOR_IMPORTANCE = 30


@dataclass(frozen=True)
class Importances:
    """fANOVA importances with their spread, and the budget they compare trials at."""

    mean: dict[str, float]
    sd: dict[str, float]
    trials: int
    #: Epoch at which every included trial is scored (its best val_acc up to then); ``None``: full runs.
    epoch: int | None


def same_budget_scores(trials: pd.DataFrame, epochs: pd.DataFrame,
                       min_trials: int = MIN_TRIALS_FOR_IMPORTANCE) -> tuple[pd.DataFrame, int | None]:
    """Trials scored at one budget: the deepest epoch that at least ``min_trials`` comparable trials reached,
    each scored by its best val_acc up to that epoch (a pruned trial's partial score is never set beside
    a finished trial's final one)."""
    ok = trials[trials["status"].isin(RANKED_STATUSES)]
    e = epochs[epochs["trial_id"].isin(ok["trial_id"])]
    if e.empty:
        return ok.iloc[:0].assign(score=[]), None
    reached = e.groupby("trial_id")["epoch"].max()
    depths = sorted(reached.unique(), reverse=True)
    epoch = next((int(d) for d in depths if (reached >= d).sum() >= min_trials), int(depths[-1]))
    ids = reached[reached >= epoch].index
    score = e[e["trial_id"].isin(ids) & (e["epoch"] <= epoch)].groupby("trial_id")["val_acc"].max()
    return ok[ok["trial_id"].isin(ids)].assign(score=ok["trial_id"].map(score)), epoch


def parameter_importances(trials: pd.DataFrame, epochs: pd.DataFrame | None = None, seeds: int = 5) -> Importances | None:
    """Optuna fANOVA importances of the varying parameters, mean and sd over ``seeds`` forests.

    Trials are compared at the same budget (``same_budget_scores``); without ``epochs``, only completed
    trials (the full budget) count. ``None`` with fewer than ``MIN_TRIALS_FOR_IMPORTANCE`` trials.
    """
    if epochs is None:
        ok, epoch = trials[(trials["status"] == "completed") & trials["best_val_acc"].notna()].assign(score=trials["best_val_acc"]), None
    else:
        ok, epoch = same_budget_scores(trials, epochs)
    ok = ok[ok["score"].notna()]
    if len(ok) < MIN_TRIALS_FOR_IMPORTANCE:
        return None
    dists = _distributions(ok)
    if not dists:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for _, row in ok.iterrows():
        params = {n: PARAMS[n].type(row[n]) for n in dists if pd.notna(row[n])}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={n: dists[n] for n in params}, value=float(row["score"])))
    try:
        runs = pd.DataFrame([optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
                             for seed in range(seeds)]).fillna(0.0)
    except (ValueError, RuntimeError):  # e.g. no parameter present in every trial
        return None
    order = runs.mean().sort_values(ascending=False).index
    return Importances({n: float(runs[n].mean()) for n in order}, {n: float(runs[n].std(ddof=0)) for n in order}, len(ok), epoch)


def _distributions(ok: pd.DataFrame) -> dict:
    """Optuna distributions spanning the values the trials took, for each parameter that varied."""
    dists = {}
    for name in key_params(ok):
        values = ok[name].dropna()
        if values.nunique() < 2:
            continue
        if PARAMS[name].type is str:
            dists[name] = CategoricalDistribution(sorted(values.unique()))
        elif PARAMS[name].type is int:
            dists[name] = IntDistribution(int(values.min()), int(values.max()))
        else:
            low, high = float(values.min()), float(values.max())
            dists[name] = FloatDistribution(low, high, log=low > 0 and high / low > 100)
    return dists


def importance_notes(importances: Importances | None) -> list[str]:
    """What a reader must know before trusting the importances plot (or why there is none)."""
    if importances is None:
        return [f"Parameter importances skipped: they need at least {MIN_TRIALS_FOR_IMPORTANCE} completed or "
                "pruned trials, compared at the same epoch, with a varying parameter."]
    if importances.trials < FEW_TRIALS_FOR_IMPORTANCE:
        return [f"Warning: parameter importances come from only {importances.trials} trials (compared at epoch "
                f"{importances.epoch}); with fewer than {FEW_TRIALS_FOR_IMPORTANCE} they are mostly noise: read the "
                "error bars (spread over fANOVA seeds) before trusting the order."]
    return []
