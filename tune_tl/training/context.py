"""What every trial of a search shares, prepared once in the driver: ``prepare_context(spec)``.

The driver builds each candidate backbone once (a bad name or weights file fails here, before Ray)
and decodes, splits and resizes the data once per
resolution. The result travels to every trial through Ray's object store inside :class:`TrialContext`;
the search, ``tune-tl resume``, ``--recheck``, ``retrain`` and the benchmarks all start here, so a
config means the same data and weights wherever it runs.

    >>> prepared = prepare_context(load_space())            # doctest: +SKIP
    >>> plan = build_trial(config, prepared.context, "cpu")   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from tune_tl.config.params import TrialConfig
from tune_tl.config.spec import SearchSpec
from tune_tl.data.sources import load_data
from tune_tl.data.types import LoadedData, PreparedData
from tune_tl.errors import TuneTLError
from tune_tl.models import Backbone, BackboneFamily, build_backbone, registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialContext:
    """What every trial shares: the backbones' weights, the data, the epoch budget, the seed."""

    backbone_name: str
    backbone_state: Mapping[str, torch.Tensor]
    data: PreparedData
    max_epochs: int
    seed: int
    #: Folder of the shared frozen-feature cache (``<search>/feature_cache``); ``None`` disables it.
    feature_cache: str | None = None
    #: Every candidate's weights (name -> state) when the backbone is a search parameter; they travel to
    #: Ray's object store once, with the context. Empty: ``backbone_name`` is the only backbone.
    backbone_states: Mapping[str, Mapping[str, torch.Tensor]] = field(default_factory=dict)
    #: The heads stage 0 fitted for fine-tunes (``SearchRun.start_heads``): (backbone, resolution) -> (weight, bias) of
    #: an ``nn.Linear``; a trial with ``head_init: probe`` and that backbone and resolution starts from it
    #: (``training.recipe.build_model``).
    probe_heads: Mapping[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    #: The user-registered backbones (``tune_tl.register_backbone``) among the search's: a trial's process never
    #: ran that call, so their recipes travel with the context (cloudpickled) and ``build_model`` registers them.
    families: tuple[BackboneFamily, ...] = ()

    def backbone_for(self, cfg: TrialConfig) -> tuple[str, Mapping[str, torch.Tensor]]:
        """The (name, weights) a trial builds: its config's ``backbone``, else the search's one backbone."""
        name = cfg.backbone or self.backbone_name
        if name in self.backbone_states:
            return name, self.backbone_states[name]
        if name == self.backbone_name:
            return name, self.backbone_state
        raise TuneTLError(f"trial config: backbone {name!r} is not one of this search's backbones "
                          f"({', '.join(self.backbone_states) or self.backbone_name})")


@dataclass(frozen=True)
class PreparedSearch:
    """The driver's prepared search: the trials' context, plus the built backbones and what the data step said."""

    context: TrialContext
    backbones: dict[str, Backbone]
    loaded: LoadedData

    @property
    def num_blocks(self) -> dict[str, int]:
        return {name: len(b.blocks) for name, b in self.backbones.items()}

    def keep(self, names: Sequence[str]) -> PreparedSearch:
        """Only the backbones ``names`` (the first becomes the default), as after ``backbone_selection``."""
        backbones = {name: self.backbones[name] for name in names}
        return dataclasses.replace(self, backbones=backbones, context=_context(backbones, self.context.data, self.context.max_epochs,
                                                                               self.context.seed))


def prepare_context(spec: SearchSpec, resolutions: Sequence[int] | None = None, backbones: Sequence[str] | None = None) -> PreparedSearch:
    """Build ``spec``'s backbones and prepare its data (no Ray); ``search.plan.resolve_plan`` then checks the space against them.

    Args:
        resolutions: Prepare only these sizes (default: every size the space may sample).
        backbones: Build only these (default: every listed backbone).

    Raises:
        TuneTLError: Unknown backbone or bad weights, bad data.
    """
    names = tuple(backbones or spec.backbone.names)
    built = {name: build_backbone(name, spec.backbone.weights) for name in names}
    loaded = load_data(spec.data, list(resolutions or spec.resolutions()), spec.seed)
    for b in built.values():
        log.info("backbone %s: %d blocks, %d features", b.name, len(b.blocks), b.num_features)
    return PreparedSearch(_context(built, loaded.data, spec.budget.max_epochs, spec.seed), built, loaded)


def _context(backbones: Mapping[str, Backbone], data: PreparedData, max_epochs: int, seed: int) -> TrialContext:
    states = {name: b.features.state_dict() for name, b in backbones.items()}
    first = next(iter(states))
    return TrialContext(first, states[first], data, max_epochs, seed, backbone_states=states if len(states) > 1 else {},
                        families=registry.shipped(states))
