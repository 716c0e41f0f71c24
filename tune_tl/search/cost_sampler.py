"""What the sampler weighs a proposed trial by: the predicted FLOPs of its config trained for ``max_epochs``.

Optuna's candidates are only part of a trial's config: the space's fixed values reach Ray as constants
(``config.sampling.sample_params``), and a candidate of one parameter group leaves the other groups out.
:class:`CandidateCost` completes them, in this order: the space's fixed values for the candidate's backbone,
the values Optuna gave, then each parameter's registry default (``TrialConfig.from_dict``), and asks the
cost model (:mod:`tune_tl.training.cost_model`). ``make_sampler`` hands it to
:class:`tune_tl.compat.TPESamplerWithCost`, which divides TPE's density ratio by cost^α, α given by
:class:`CostCooling`: 1 when the Tuner starts, falling linearly to 0 as its budget is spent.

Why cooling: dividing by the whole cost lets the cheapest region win whatever its expected gain (after the probes,
head-only configs that cannot beat the probe won half the trials of the README's first search). Early on, cheap
configs are worth their information; late, only a config that can improve on the incumbent is worth starting, and
TPE's own density ratio is the better judge of that (Lee et al., "Cost-aware Bayesian optimization", 2020, "cost
cooling"; the density ratio of Quick-Tune's acquisition, Arango et al., ICLR 2024).

    >>> cost = CandidateCost.for_search(plan)                          # doctest: +SKIP
    >>> cost({"freeze_policy": "head_only"}) < cost({"freeze_policy": "full"})  # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tune_tl.config.params import PARAMS, TrialConfig
from tune_tl.search.admission import BudgetClock
from tune_tl.search.plan import SearchPlan
from tune_tl.training.cost_model import CostModel


@dataclass(frozen=True)
class CandidateCost:
    """``cost(params)``: predicted FLOPs of ``max_epochs`` epochs of the config ``params`` (Optuna's values) stands for."""

    model: CostModel
    #: backbone -> the space's fixed values for it (Optuna never sees them). A Python space's constants are known
    #: only when its function runs: its largest declared resolution and the other parameters' defaults stand in.
    fixed: Mapping[str, Mapping[str, Any]]
    max_epochs: int
    #: ``excluded(config) -> reason or None``: a config the search never starts (``search.admission.ProbeDominance``)
    #: costs infinity, so the sampler never chooses it while another candidate exists.
    excluded: Callable[[TrialConfig], str | None] | None = None

    @classmethod
    def for_search(cls, plan: SearchPlan) -> CandidateCost:
        """The cost of ``plan``'s candidates, by its cost model and its backbones' fixed values."""
        spec = plan.spec
        if spec.space_fn is not None:
            fixed = dict.fromkeys(plan.backbones, {"resolution": max(spec.declared_resolutions)})
        else:
            fixed = {name: b.fixed for name, b in plan.backbones.items()}
        return cls(plan.cost_model, fixed, spec.budget.max_epochs)

    def config(self, params: Mapping[str, Any]) -> TrialConfig:
        """The trial config a candidate stands for (see the module docstring)."""
        backbone = params.get("backbone") or self.model.default_backbone
        given = {name: value for name, value in params.items() if name in PARAMS}
        return TrialConfig.from_dict({**self.fixed.get(backbone, {}), **given, "backbone": backbone})

    def __call__(self, params: Mapping[str, Any]) -> float:
        config = self.config(params)
        if self.excluded is not None and self.excluded(config) is not None:
            return math.inf
        return self.model.trial_cost(config, self.max_epochs)


@dataclass(frozen=True)
class CostCooling:
    """``cooling() -> α = 1 − spent``: the exponent of the cost in the sampler's acquisition, from the budget's clock
    (elapsed / the Tuner's time budget, or trials started / ``samples`` without one)."""

    clock: BudgetClock

    def __call__(self) -> float:
        return 1.0 - self.clock.spent()
