"""Samplers for the replay: which recorded config a simulated search tries next.

Every sampler draws recorded configs without replacement (a table of N configs is a search of at
most N trials). ``TPEReplay`` runs Optuna's real TPE over the space the table spans and, as Syne
Tune's blackbox repository does for configs it has not recorded, evaluates each proposal by its
nearest recorded neighbour (here: the nearest one not tried yet); TPE is told that neighbour's curve
the way tune_tl's sampler tells it (epochs as intermediate values, COMPLETE with the best epoch, or
PRUNED when the scheduler stopped it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from tune_tl.bench.sim import Curve
from tune_tl.search.textbook import RECIPES as _RECIPES

#: Textbook transfer-learning recipes, tried first by ``TextbookFirst``: ``(defining values, every
#: value)``; the nearest recorded config on the defining values (then on all) stands in for each.
#: tune_tl's own list (``tune_tl.search.textbook.RECIPES``) when it exists.
try:
    TEXTBOOK = tuple((dict(defining), {**values, **defining}) for _, defining, values in _RECIPES)
except ImportError:  # a tune_tl without textbook recipes
    TEXTBOOK = (
        ({"freeze_policy": "full", "lp_epochs": 0}, {"freeze_policy": "full", "optimizer": "adamw", "lr": 1e-3, "lp_epochs": 0}),
        ({"freeze_policy": "head_only"}, {"freeze_policy": "head_only", "optimizer": "adamw", "lr": 1e-3}),
        ({"freeze_policy": "full", "lp_epochs": 1}, {"freeze_policy": "full", "optimizer": "adamw", "lr": 1e-3, "lp_epochs": 1}),
    )


def space_of(curves: list[Curve]) -> dict[str, Any]:
    """Optuna distributions spanning the recorded values of every parameter that varies."""
    dists: dict[str, Any] = {}
    names = sorted({k for c in curves for k in c.params})
    for name in names:
        values = [c.params[name] for c in curves if name in c.params]
        if len(set(values)) < 2:
            continue
        if any(isinstance(v, str) for v in values):
            dists[name] = CategoricalDistribution(sorted(set(map(str, values))))
        elif all(float(v).is_integer() for v in values):
            dists[name] = IntDistribution(int(min(values)), int(max(values)))
        else:
            low, high = float(min(values)), float(max(values))
            dists[name] = FloatDistribution(low, high, log=low > 0 and high / low >= 10)
    return dists


def distance(wanted: dict[str, Any], have: dict[str, Any], dists: dict[str, Any]) -> float:
    """Squared distance over the parameters of ``wanted`` in [0, 1] units (log scale where the range
    is), 1 per differing category; a parameter ``have`` lacks (inactive there) adds nothing."""
    total = 0.0
    for name, value in wanted.items():
        dist = dists.get(name)
        if dist is None or name not in have:
            continue
        other = have[name]
        if isinstance(dist, CategoricalDistribution):
            total += float(str(value) != str(other))
            continue
        low, high, v, o = float(dist.low), float(dist.high), float(value), float(other)
        if getattr(dist, "log", False):
            low, high, v, o = math.log(low), math.log(high), math.log(max(v, 1e-300)), math.log(o)
        total += ((v - o) / (high - low)) ** 2 if high > low else 0.0
    return total


def nearest(wanted: dict[str, Any], pool: list[Curve], dists: dict[str, Any]) -> Curve:
    return min(pool, key=lambda c: (distance(wanted, c.params, dists), c.trial_id))


class RandomOrder:
    """The recorded configs in a seeded random order (tune_tl's ``--sampler random``)."""

    def __init__(self, curves: list[Curve], seed: int):
        rng = np.random.default_rng(seed)
        self._queue = [curves[i] for i in rng.permutation(len(curves))]

    def propose(self) -> Curve | None:
        return self._queue.pop(0) if self._queue else None

    def observe(self, curve: Curve, epochs: int, completed: bool) -> None:
        pass


class TextbookFirst(RandomOrder):
    """The recorded configs nearest to the ``TEXTBOOK`` recipes first (in their order), then a seeded random order."""

    def __init__(self, curves: list[Curve], seed: int, recipes=TEXTBOOK):
        super().__init__(curves, seed)
        dists = space_of(curves)
        first: list[Curve] = []
        for defining, values in recipes:
            pool = [c for c in curves if c not in first]
            if pool:
                first.append(min(pool, key=lambda c: (distance(defining, c.params, dists), distance(values, c.params, dists), c.trial_id)))
        self._queue = first + [c for c in self._queue if c not in first]


class TPEReplay:
    """Optuna's TPE proposing configs, each evaluated by its nearest untried recorded config."""

    def __init__(self, curves: list[Curve], seed: int, n_startup_trials: int | None = None, multivariate: bool = False):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._pool = list(curves)
        self._dists = space_of(curves)
        startup = n_startup_trials if n_startup_trials is not None else max(2, len(curves) // 4)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=multivariate)
        self._study = optuna.create_study(direction="maximize", sampler=sampler)
        self._asked: dict[str, optuna.Trial] = {}

    def propose(self) -> Curve | None:
        if not self._pool:
            return None
        trial = self._study.ask(self._dists)
        curve = nearest(trial.params, self._pool, self._dists)
        self._pool.remove(curve)
        self._asked[curve.trial_id] = trial
        return curve

    def observe(self, curve: Curve, epochs: int, completed: bool) -> None:
        trial = self._asked.pop(curve.trial_id)
        for epoch in range(epochs):
            trial.report(float(curve.val_acc[epoch]), step=epoch + 1)
        if completed:
            self._study.tell(trial, float(curve.val_acc[:epochs].max()), state=TrialState.COMPLETE)
        else:
            self._study.tell(trial, state=TrialState.PRUNED)


#: Sampler name → factory(curves, seed).
SAMPLERS = {
    "random": RandomOrder,
    "tpe": TPEReplay,
    "textbook": TextbookFirst,
}
