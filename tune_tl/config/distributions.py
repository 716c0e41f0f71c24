"""What one parameter of a space may take (a fixed value, a choice, a range), and the symbolic values.

``freeze_blocks: {low: 0, high: all}``, ``train_block: last`` and ``resolution: native`` name things only
a backbone knows (its block count, its input size); :func:`resolve_all` and :func:`resolve_native` turn
them into numbers once the backbone is known, and a resolution range into the grid of sizes the data is
prepared at (:func:`resolution_grid`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from tune_tl.errors import TuneTLError

ALL = "all"  # freeze_blocks upper bound meaning "every block" (a linear probe)
LAST = "last"  # train_block value meaning "the last block"
NATIVE = "native"  # resolution (fixed, or a range's high) meaning "the side each backbone's weights were trained at"
#: Parameters that name backbone blocks: (symbolic value, the highest valid index for n blocks).
BLOCK_PARAMS = {"freeze_blocks": (ALL, lambda n: n), "train_block": (LAST, lambda n: n - 1)}
#: A resolution range may sample at most this many sizes: data is prepared (and held in memory) once per size.
MAX_RESOLUTIONS = 16


@dataclass(frozen=True)
class Fixed:
    value: Any


@dataclass(frozen=True)
class Choice:
    values: tuple


@dataclass(frozen=True)
class Range:
    low: Any
    high: Any
    log: bool = False
    step: Any = None


Distribution = Fixed | Choice | Range


@dataclass(frozen=True)
class ParamSpec:
    name: str
    dist: Distribution


def contains(dist: Distribution, value: Any) -> bool:
    """Whether ``dist`` can produce ``value`` (a range with a step only on its grid)."""
    if isinstance(dist, Fixed):
        return dist.value == value
    if isinstance(dist, Choice):
        return value in dist.values
    if not dist.low <= value <= dist.high:
        return False
    return dist.step is None or abs((value - dist.low) / dist.step - round((value - dist.low) / dist.step)) < 1e-9


def values_of(dist: Distribution) -> tuple:
    """The values a fixed value or choice takes, or a range's two ends."""
    if isinstance(dist, Fixed):
        return (dist.value,)
    if isinstance(dist, Choice):
        return dist.values
    return (dist.low, dist.high)


def resolution_grid(d: Range, source: str) -> list[int]:
    """Every size a ``resolution`` range can sample: ``low, low+step, ... <= high`` (Optuna's int grid)."""
    where = f"{source}: params.resolution"
    if d.step is not None and d.step < 1:
        raise TuneTLError(f"{where}.step: must be at least 1, got {d.step}")
    if not d.step:
        raise TuneTLError(f"{where}: a range needs a 'step' (e.g. {{low: {d.low}, high: {d.high}, step: 32}}), because "
                          "the data is prepared once per resolution it can sample; or list the choices")
    grid = list(range(int(d.low), int(d.high) + 1, int(d.step)))
    if len(grid) > MAX_RESOLUTIONS:
        raise TuneTLError(f"{where}: low {d.low}, high {d.high}, step {d.step} gives {len(grid)} resolutions; at most "
                          f"{MAX_RESOLUTIONS} (each is prepared in memory): use a larger step")
    return grid


def resolutions_of(d: Distribution, source: str) -> list[int]:
    """Every size a (resolved) ``resolution`` distribution can sample, smallest first."""
    if isinstance(d, Fixed):
        return [d.value]
    if isinstance(d, Choice):
        return sorted(d.values)
    return resolution_grid(d, source)


def uses_native(d: Distribution) -> bool:
    return (d.value if isinstance(d, Fixed) else d.high if isinstance(d, Range) else None) == NATIVE


def native(d: Distribution, size: int, where: str) -> Distribution:
    """``d`` with ``native`` replaced by ``size``; a range's high becomes its largest step at or below ``size``."""
    if isinstance(d, Fixed):
        return Fixed(size) if d.value == NATIVE else d
    if isinstance(d, Range) and d.high == NATIVE:
        if size < d.low:
            raise TuneTLError(f"{where}: params.resolution: low {d.low} is above this backbone's native size {size}; "
                              f"use a low of at most {size}")
        return Range(d.low, d.low + (size - d.low) // d.step * d.step, d.log, d.step)
    return d


def resolve_native(params: tuple[ParamSpec, ...], size: int | None, where: str = "") -> tuple[ParamSpec, ...]:
    """Replace ``native`` in ``resolution`` by ``size`` (one backbone's native side); no-op when ``size`` is ``None``."""
    if size is None:
        return params
    return tuple(ParamSpec(p.name, native(p.dist, size, where)) if p.name == "resolution" else p for p in params)


def resolve_all(params: tuple[ParamSpec, ...], num_blocks: int, source: str) -> tuple[ParamSpec, ...]:
    """Replace ``all`` (``freeze_blocks``) and ``last`` (``train_block``) by block indices; check ranges fit."""
    out = []
    for p in params:
        d = p.dist
        if p.name in BLOCK_PARAMS:
            where = f"{source}: params.{p.name}"
            symbol, high = BLOCK_PARAMS[p.name]
            fix = functools.partial(_blocks, symbol=symbol, high=high(num_blocks), num_blocks=num_blocks, where=where)
            if isinstance(d, Range):
                d = Range(fix(d.low), fix(d.high), d.log, d.step)
                if d.low > d.high:
                    raise TuneTLError(f"{where}: low ({d.low}) is greater than high ({d.high}) for this backbone")
            elif isinstance(d, Choice):
                d = Choice(tuple(fix(v) for v in d.values))
            else:
                d = Fixed(fix(d.value))
        out.append(ParamSpec(p.name, d))
    return tuple(out)


def _blocks(value: Any, symbol: str, high: int, num_blocks: int, where: str) -> int:
    if value == symbol:
        return high
    if not 0 <= value <= high:
        raise TuneTLError(f"{where}: {value} is outside 0..{high} (this backbone has {num_blocks} blocks)")
    return value
