"""A search's space, resolved once against its built backbones: :class:`SearchPlan` (``resolve_plan``).

A space file says ``freeze_blocks: [0, all]`` or ``resolution: native``; what those mean depends on each
backbone (its block count, the size its weights were trained at). The driver resolves them here, once,
right after ``training.context.prepare_context`` built the backbones (so a bound a backbone cannot meet
fails before Ray starts), and hands the plan to everything that needs the resolved space: the probes,
the textbook start, the cost-aware sampler and ASHA's unit, the tuner, the warm start and ``resume``.
Nothing else calls the space's resolver (``SearchSpec.sub_spaces`` and its wrappers ``define_by_run`` and
``check_blocks``); ``tests/test_search_run.py`` checks that.

It lives in ``search/`` rather than ``config/`` because it holds the cost model, counted on the built
backbones (``training.cost_model``), which config sits below.

    >>> prepared = prepare_context(spec)                            # doctest: +SKIP
    >>> plan = resolve_plan(spec, prepared, feature_cache=True)     # doctest: +SKIP
    >>> plan.num_blocks, plan.space                                 # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tune_tl.config.distributions import Fixed, ParamSpec, resolutions_of
from tune_tl.config.sampling import sample_backbone, sample_per_backbone
from tune_tl.config.spec import SearchSpec
from tune_tl.training.context import PreparedSearch
from tune_tl.training.cost_model import CostModel, build_cost_model, with_probed_boundaries


@dataclass(frozen=True)
class BackbonePlan:
    """One candidate backbone as the search sees it: its blocks, its native size and its part of the space."""

    name: str
    num_blocks: int
    #: The image side its weights were trained at (``Backbone.input_size``); ``None`` when the backbone does not say.
    native_size: int | None
    #: The space's parameters with ``all``/``last``/``native`` resolved for this backbone (empty for a Python space).
    params: tuple[ParamSpec, ...]

    @property
    def fixed(self) -> dict[str, Any]:
        """The space's fixed values for this backbone: Ray gets them as constants, Optuna never sees them."""
        return {p.name: p.dist.value for p in self.params if isinstance(p.dist, Fixed)}

    @property
    def distributions(self) -> dict[str, Any]:
        """Parameter name -> resolved distribution."""
        return {p.name: p.dist for p in self.params}


@dataclass(frozen=True)
class SearchPlan:
    """The spec plus everything resolved from it and the built backbones; the best-ranked backbone first."""

    spec: SearchSpec
    #: name -> :class:`BackbonePlan`, in the order of ``spec.backbone.names``.
    backbones: Mapping[str, BackbonePlan]
    #: Every input side data was prepared at, smallest first.
    resolutions: tuple[int, ...]
    #: Predicted FLOPs of a trial's epochs (``None`` when made without one: tests of the space alone).
    cost_model: CostModel | None = None

    @property
    def first(self) -> BackbonePlan:
        """The default backbone: the best-ranked one after the probes, else the first listed."""
        return next(iter(self.backbones.values()))

    @property
    def num_blocks(self) -> dict[str, int]:
        return {name: b.num_blocks for name, b in self.backbones.items()}

    @property
    def sub_spaces(self) -> dict[str, tuple[ParamSpec, ...]]:
        return {name: b.params for name, b in self.backbones.items()}

    @property
    def space(self) -> Callable:
        """The picklable define-by-run function Ray's ``OptunaSearch`` calls (``backbone`` first when it is a choice)."""
        spec = self.spec
        if spec.space_fn is not None:
            return functools.partial(sample_backbone, spec.backbone.names, spec.space_fn) if spec.backbone.is_choice else spec.space_fn
        return functools.partial(sample_per_backbone, self.sub_spaces)

    def allowed_resolutions(self, backbone: str) -> list[int]:
        """Every side ``backbone``'s trials may ask for, smallest first."""
        if self.spec.space_fn is not None:
            return sorted(self.spec.declared_resolutions)
        resolution = self.backbones[backbone].distributions.get("resolution")
        return resolutions_of(resolution, self.spec.source) if resolution is not None else list(self.resolutions)

    @property
    def rung_unit(self) -> float:
        """Cost-aware ASHA's unit: a whole-model fine-tune epoch of the first backbone at the largest side it may take.
        A function of the plan alone, known before any trial runs."""
        return self.cost_model.fine_tune_epoch(self.first.name, max(self.allowed_resolutions(self.first.name)))

    def with_probed_boundaries(self, prepared: PreparedSearch, probed: Sequence[tuple[str, int]]) -> SearchPlan:
        """This plan once the probes ran: its cost model knows which freeze boundaries their one pass kept."""
        if self.cost_model is None:
            return self
        costs = with_probed_boundaries(self.cost_model, prepared.backbones, prepared.context.data, probed)
        return dataclasses.replace(self, cost_model=costs)

    def keep(self, spec: SearchSpec) -> SearchPlan:
        """This plan for ``spec``, a ranked copy of its own (the same backbones, fewer or reordered): nothing is resolved again."""
        names = spec.backbone.names
        costs = None if self.cost_model is None else self.cost_model.keep(names)
        return dataclasses.replace(self, spec=spec, backbones={name: self.backbones[name] for name in names}, cost_model=costs)


def resolve_plan(spec: SearchSpec, prepared: PreparedSearch, feature_cache: bool = True) -> SearchPlan:
    """Resolve ``spec`` against ``prepared``'s built backbones and count their FLOPs for the cost model.

    ``feature_cache``: whether trials may read the feature cache (``--no-feature-cache`` turns it off).

    Raises:
        TuneTLError: A block bound (``freeze_blocks``, ``train_block``) that a backbone cannot meet.
    """
    native = {name: b.input_size for name, b in prepared.backbones.items()}
    costs = build_cost_model(prepared.backbones, prepared.context.data, feature_cache=feature_cache)
    return plan_for(spec, prepared.num_blocks, native, sorted(prepared.context.data.splits), costs)


def plan_for(spec: SearchSpec, num_blocks: int | Mapping[str, int], native: Mapping[str, int | None] | None = None,
             resolutions: Sequence[int] | None = None, cost_model: CostModel | None = None) -> SearchPlan:
    """The plan of ``spec`` from its backbones' block counts alone (``resolve_plan`` without building anything)."""
    blocks = num_blocks if isinstance(num_blocks, Mapping) else dict.fromkeys(spec.backbone.names, num_blocks)
    spaces = spec.sub_spaces(blocks)  # the one call of the space's resolver in the package
    backbones = {name: BackbonePlan(name, blocks[name], (native or {}).get(name), spaces[name]) for name in spec.backbone.names}
    return SearchPlan(spec, backbones, tuple(sorted(resolutions or spec.resolutions())), cost_model)
