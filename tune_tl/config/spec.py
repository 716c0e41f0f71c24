"""A validated search as typed, frozen dataclasses: ``SearchSpec`` and its sections.

Built once at the edge (``tune_tl.config.space`` parses a space file; the CLI applies its overrides with
:func:`with_budget`) and passed inward; nothing downstream parses a space file again.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tune_tl.config.distributions import ParamSpec, native, resolutions_of, resolve_all, resolve_native, uses_native
from tune_tl.config.params import PARAMS
from tune_tl.config.sampling import sample_backbone, sample_per_backbone
from tune_tl.errors import TuneTLError

#: ``data.source`` values.
DATA_SOURCES = ("digits", "imagefolder", "cifar10")
#: Seconds a search may run when neither ``budget.time`` nor ``--time-budget`` says (about 10 minutes on a laptop).
DEFAULT_TIME_BUDGET = 600.0
#: ``budget.time: none`` / ``--time-budget none``: no time limit.
NO_LIMIT = "none"
#: ``backbone_selection.by`` values (columns of ``tune-tl rank``).
SELECTION_SCORES = ("logme", "probe_acc")


@dataclass(frozen=True)
class DataSpec:
    source: str = "digits"
    path: str | None = None
    val_fraction: float = 0.2
    #: Decoded images above this size are streamed from files per epoch instead of shared in memory.
    memory_budget_mb: float = 4096.0
    #: Leave out corrupt/unreadable/non-image files (listed in skipped_images.txt) instead of failing.
    skip_bad_images: bool = False
    #: Keep val/test files byte-identical to a training file (or a test file identical to a val file) instead of
    #: dropping them (``tune_tl.data.duplicates``); they are reported and listed in duplicates.csv either way.
    keep_duplicates: bool = False

    def check(self, source: str) -> DataSpec:
        """Raise naming ``source`` unless every value is usable; return ``self``."""
        if self.source not in DATA_SOURCES:
            raise TuneTLError(f"{source}: data.source: {self.source!r} is not one of {list(DATA_SOURCES)}")
        if not self.memory_budget_mb > 0:
            raise TuneTLError(f"{source}: data.memory_budget_mb must be positive, got {self.memory_budget_mb}")
        if not 0.0 < self.val_fraction < 1.0:
            raise TuneTLError(f"{source}: data.val_fraction must be between 0 and 1, got {self.val_fraction}")
        return self


@dataclass(frozen=True)
class BackboneSpec:
    #: One backbone, or a tuple of names: then the backbone is a search parameter (``backbone`` column).
    name: str | tuple[str, ...] = "efficientnet_lite0"
    weights: str = "imagenet"

    def __post_init__(self):
        if isinstance(self.name, list):  # read back from search.json (JSON has no tuples)
            object.__setattr__(self, "name", tuple(self.name))

    @property
    def names(self) -> tuple[str, ...]:
        """Every candidate backbone, in the space file's order."""
        return (self.name,) if isinstance(self.name, str) else tuple(self.name)

    @property
    def is_choice(self) -> bool:
        return not isinstance(self.name, str)


@dataclass(frozen=True)
class SelectionSpec:
    """``backbone_selection``: rank the listed backbones on the data first and search only the ``top`` best."""

    top: int = 1
    #: The ranking column: ``logme`` or ``probe_acc`` (see ``tune-tl rank``).
    by: str = "logme"

    def check(self, source: str) -> SelectionSpec:
        if self.top < 1:
            raise TuneTLError(f"{source}: backbone_selection.top must be at least 1, got {self.top}")
        if self.by not in SELECTION_SCORES:
            raise TuneTLError(f"{source}: backbone_selection.by: {self.by!r} is not one of {list(SELECTION_SCORES)}")
        return self


@dataclass(frozen=True)
class BudgetSpec:
    samples: int = 12
    max_epochs: int = 4
    grace_period: int = 1
    reduction_factor: float = 3.0
    #: Seconds the search may run, probes included (``--time-budget``); ``None`` = no limit (``none`` in a space file).
    time: float | None = DEFAULT_TIME_BUDGET
    #: Ended trials whose best-epoch checkpoint stays on disk: the top K by val_acc (``--keep-checkpoints``;
    #: ``tune_tl.search.retention``). The others' checkpoints are deleted once they can no longer be among them.
    keep_checkpoints: int = 3

    def check(self, source: str) -> BudgetSpec:
        """Raise naming ``source`` (a space file, or ``command line``) unless the budget is usable."""
        for key in ("samples", "max_epochs", "grace_period"):
            if getattr(self, key) < 1:
                raise TuneTLError(f"{source}: budget.{key} must be at least 1, got {getattr(self, key)}")
        if self.grace_period > self.max_epochs:
            raise TuneTLError(f"{source}: budget.grace_period ({self.grace_period}) exceeds budget.max_epochs ({self.max_epochs})")
        if not 1 < self.reduction_factor < math.inf:
            raise TuneTLError(f"{source}: budget.reduction_factor must be greater than 1 (and finite), got {self.reduction_factor}")
        if self.keep_checkpoints < 0:
            raise TuneTLError(f"{source}: budget.keep_checkpoints must be 0 or more, got {self.keep_checkpoints}")
        if self.time is not None and not (math.isfinite(self.time) and self.time > 0):
            raise TuneTLError(f"{source}: budget.time must be a positive number of seconds, got {self.time}")
        return self


def cost_rungs(unit: float, grace_period: int, max_epochs: int, reduction_factor: float) -> list[float]:
    """Rung milestones, lowest first: ``grace_period × unit × reduction_factor^k``, as many as Ray's ASHA makes
    between ``grace_period`` and ``max_epochs`` units (Ray's ``_Bracket``: ``int(log(max_t/min_t)/log(rf) + 1)``,
    so a rung can sit at ``max_epochs`` itself).

    ``unit`` is the cost of one reference epoch; with ``unit=1`` these are the epoch rungs of Ray's ``ASHAScheduler``
    (``--scheduler asha``, and PASHA's levels below its maximum), the one formula for both.

        >>> cost_rungs(1, grace_period=1, max_epochs=9, reduction_factor=3)
        [1, 3, 9]
    """
    # Counted on epochs, exactly as Ray counts them: costs (6 × 0.1 / 0.1 = 6.000000000000001) would
    # let float rounding add or drop the rung at max_epochs.
    count = int(np.log(max(max_epochs, grace_period) / grace_period) / np.log(reduction_factor) + 1)
    return [grace_period * unit * reduction_factor**k for k in range(count)]


@dataclass(frozen=True)
class SearchSpec:
    """A validated search: what data, which backbone, how much budget, which parameters."""

    data: DataSpec = DataSpec()
    backbone: BackboneSpec = BackboneSpec()
    budget: BudgetSpec = BudgetSpec()
    seed: int = 0
    params: tuple[ParamSpec, ...] = ()
    #: A user's define-by-run function (Python space files); ``None`` for YAML spaces.
    space_fn: Callable | None = field(default=None, compare=False)
    #: Resolutions a Python space may sample (YAML spaces derive them from ``params``).
    declared_resolutions: tuple[int, ...] = (64,)
    source: str = "<built-in>"
    text: str = ""
    #: Keep only the best-ranked backbones of a list (``None``: search every listed backbone).
    backbone_selection: SelectionSpec | None = None

    def param(self, name: str) -> ParamSpec | None:
        """The space's entry for parameter ``name`` (``None``: not in the space, so its default applies)."""
        return next((p for p in self.params if p.name == name), None)

    def resolutions(self) -> list[int]:
        """Every input resolution a trial may ask for; data is prepared once for each."""
        if self.space_fn is not None:
            return sorted(self.declared_resolutions)
        p = self.param("resolution")
        if p is None:
            return [PARAMS["resolution"].default]
        if uses_native(p.dist):
            sizes = self.native_sizes()
            return sorted({r for name in self.backbone.names
                           for r in resolutions_of(native(p.dist, sizes[name], f"{self.source} (backbone {name})"), self.source)})
        return resolutions_of(p.dist, self.source)

    def native_sizes(self) -> dict[str, int]:
        """Each candidate backbone's native input side (``resolution: native``)."""
        # config sits below models; this is its one question to a backbone, asked only when a space says "native".
        from tune_tl.models.backbones import native_size

        return {name: native_size(name) for name in self.backbone.names}

    def define_by_run(self, num_blocks: int | Mapping[str, int]) -> Callable:
        """A picklable ``fn(trial) -> constants`` for Ray's ``OptunaSearch``.

        ``num_blocks``: the backbone's block count, or each candidate backbone's (name -> count) when
        ``backbone.name`` is a list; then ``backbone`` is sampled first and ``all``/``last`` mean that
        backbone's own last block.
        """
        if self.space_fn is not None:
            return functools.partial(sample_backbone, self.backbone.names, self.space_fn) if self.backbone.is_choice else self.space_fn
        return functools.partial(sample_per_backbone, self.sub_spaces(num_blocks))

    def sub_spaces(self, num_blocks: int | Mapping[str, int]) -> dict[str, tuple[ParamSpec, ...]]:
        """Each candidate backbone's parameters, block bounds resolved for its block count."""
        blocks = num_blocks if isinstance(num_blocks, Mapping) else dict.fromkeys(self.backbone.names, num_blocks)
        suffix = " (backbone {})" if self.backbone.is_choice else ""
        resolution = self.param("resolution")
        sizes = self.native_sizes() if resolution is not None and uses_native(resolution.dist) else {}
        return {name: resolve_native(resolve_all(self.params, blocks[name], self.source + suffix.format(name)), sizes.get(name),
                                     self.source + suffix.format(name))
                for name in self.backbone.names}

    def check_blocks(self, num_blocks: int | Mapping[str, int]) -> None:
        """Raise if ``freeze_blocks`` or ``train_block`` can exceed a backbone's blocks."""
        self.sub_spaces(num_blocks)


def with_budget(spec: SearchSpec, source: str = "command line", **overrides: Any) -> SearchSpec:
    """``spec`` with budget fields replaced (``None`` values ignored; ``time=NO_LIMIT`` removes the time budget),
    checked as a space file's budget is."""
    given = {k: (None if v == NO_LIMIT else v) for k, v in overrides.items() if v is not None}
    if not given:
        return spec
    return dataclasses.replace(spec, budget=dataclasses.replace(spec.budget, **given).check(source))
