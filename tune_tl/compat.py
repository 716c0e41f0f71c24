"""Every use of Ray's and Optuna's private internals, in one place, each checked against the installed version.

A private method can change in any release. Each use here names what it relies on, and
``tests/test_compat.py`` calls the matching check, which fails with the installed version in its message,
so an upgrade that breaks one says where instead of silently changing a search.

Optuna (5.1): :class:`TPESamplerWithCost` overrides ``TPESampler._sample`` (to learn each group's search
space and the trial being sampled) and ``TPESampler._compute_acquisition_func`` (to score the candidates
drawn from l(x)); :func:`check_tpe_internals` checks both signatures.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable, Mapping

import numpy as np
import optuna
from optuna.samplers import TPESampler

log = logging.getLogger(__name__)

#: The private ``TPESampler`` methods :class:`TPESamplerWithCost` overrides, with the parameters it expects.
TPE_INTERNALS = {"_sample": ("self", "study", "trial", "search_space"),
                 "_compute_acquisition_func": ("self", "samples", "mpe_below", "mpe_above")}


def check_tpe_internals() -> None:
    """Raise, naming the installed Optuna version, if a private ``TPESampler`` method we override has changed."""
    for name, expected in TPE_INTERNALS.items():
        method = getattr(TPESampler, name, None)
        found = tuple(inspect.signature(method).parameters) if callable(method) else None
        if found != expected:
            raise RuntimeError(f"optuna {optuna.__version__}: TPESampler.{name} is {found or 'gone'}, not {expected}, which "
                               f"tune_tl.compat.TPESamplerWithCost overrides; adapt tune_tl/compat.py to this Optuna version "
                               f"(or use --sampler random)")


class TPESamplerWithCost(TPESampler):
    """TPE that picks, among the candidates drawn from l(x), the best expected gain *per unit cost*.

    Optuna's TPE takes the argmax of log l(x) − log g(x) over ``n_ei_candidates`` draws; this one takes the
    argmax of log l(x) − log g(x) − log cost(x), i.e. the density ratio divided by the cost (Quick-Tune's
    cost-aware acquisition, Arango et al., ICLR 2024). Where the cost does not depend on a group's
    parameters (a learning rate), it is the same for every candidate and the choice is TPE's.

    Args:
        cost: ``cost(params) -> float > 0`` for a dict of parameter values. A candidate of one parameter group
            is scored with the values already chosen for this trial (earlier groups of the same relative sample,
            or parameters suggested before) beside it; parameters it does not give are the caller's to default.
        **kwargs: ``TPESampler``'s arguments.
    """

    def __init__(self, cost: Callable[[Mapping[str, Any]], float], **kwargs):
        super().__init__(**kwargs)
        self._cost = cost
        self._scoring: tuple[dict, dict] = ({}, {})  # (the group's distributions, the trial's values so far)
        self._chosen: tuple[int, dict] = (-1, {})  # (trial number, values this sampler chose for it)

    def _sample(self, study, trial, search_space):
        number, chosen = self._chosen
        known = {**(chosen if number == trial.number else {}), **trial.params}
        self._scoring = (search_space, known)
        sampled = super()._sample(study, trial, search_space)
        self._chosen = (trial.number, {**known, **sampled})
        return sampled

    def _compute_acquisition_func(self, samples, mpe_below, mpe_above):
        gain = super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        space, known = self._scoring
        try:
            costs = np.array([self._cost({**known, **_external(space, samples, i)}) for i in range(len(gain))], dtype=float)
        except Exception as exc:  # a search must not die in its sampler: this one draw goes by expected gain alone
            log.warning("cost-aware TPE: could not price the candidates (%s: %s); choosing by expected gain", type(exc).__name__, exc)
            return gain
        return gain - np.log(np.maximum(costs, np.finfo(float).tiny))


def _external(space: Mapping[str, optuna.distributions.BaseDistribution], samples: Mapping[str, np.ndarray], i: int) -> dict[str, Any]:
    """Candidate ``i`` of TPE's internal samples as parameter values (a choice's value, not its index)."""
    values = {name: dist.to_external_repr(samples[name][i]) for name, dist in space.items()}
    return {name: v.item() if isinstance(v, np.generic) else v for name, v in values.items()}
