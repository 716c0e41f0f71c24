"""The backbone registry: every name a space file may give, and how to build it (timm's ``register_model`` style).

The bundled EfficientNet-Lites are families registered here at import; ``torchvision/<arch>`` and
``timm/<arch>`` are libraries; ``register_backbone`` adds a user's own model from Python::

    >>> import tune_tl
    >>> from torch import nn
    >>> def tiny():                      # doctest: +SKIP
    ...     return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> tune_tl.register_backbone("tiny", tiny, blocks=lambda m: [m[0]], num_features=8)  # doctest: +SKIP

A registration lives in the process that made it. Trials run in Ray's worker processes, which never ran it:
the search's ``TrialContext`` carries the user families it uses (Ray pickles it with cloudpickle, functions
defined in a script or a notebook by value) and ``restore`` registers them there before a trial builds its
backbone.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from torch import nn

from tune_tl.errors import TuneTLError
from tune_tl.models import lite
from tune_tl.models.backbone import IMAGENET_MEAN, IMAGENET_STD, BackboneFamily, BackboneLibrary, Stats, WeightsSource
from tune_tl.models.libraries import TIMM, TORCHVISION

_FAMILIES: dict[str, BackboneFamily] = {}
_LIBRARIES: dict[str, BackboneLibrary] = {TORCHVISION.prefix: TORCHVISION, TIMM.prefix: TIMM}


def _add(family: BackboneFamily) -> BackboneFamily:
    for name in (family.name, *family.aliases):
        _FAMILIES[name] = family
    return family


for _family in lite.families():
    _add(_family)


def register_backbone(name: str, build: Callable[[], nn.Module], *, blocks: Callable[[nn.Module], Sequence[nn.Module]],
                      num_features: int, input_size: int | None = None, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD,
                      weights: WeightsSource = None, pool: Callable[[nn.Module], Callable] | None = None) -> BackboneFamily:
    """Add your own backbone under ``name``, for space files (``backbone.name``) and ``build_backbone``.

    Registering the same name again replaces it (re-running a notebook cell); a bundled name or a library
    prefix cannot be taken.

    Args:
        name: What space files call it.
        build: Returns a fresh network: normalised images (N, 3, H, W) -> pooled features (N, num_features).
            Define it at module level or in your script (Ray ships it to trials with cloudpickle).
        blocks: The built network -> its blocks, stem first; every parameter in exactly one (``freeze_blocks``
            counts them).
        num_features: Width of the pooled features.
        input_size: The side the weights were trained at (``resolution: native``).
        mean: Per-channel mean the weights expect, pixels scaled to 0..1.
        std: Per-channel standard deviation the weights expect.
        weights: The pretrained weights (``backbone.weights: imagenet`` in a space file): a state-dict file, or
            a function returning a state dict; ``None``: random init unless the space gives a file.
        pool: The built network -> what it does after its last block, if running the blocks in turn then that
            gives its output (a frozen prefix's activations can then be cached).

    Raises:
        TuneTLError: The name is taken by a bundled backbone or names a library, or an argument has the wrong type.
    """
    if not isinstance(name, str) or not name.strip():
        raise TuneTLError(f"register_backbone: name must be a non-empty string, got {name!r}")
    taken = _FAMILIES.get(name)
    if (taken is not None and taken.bundled) or name.partition("/")[0] in _LIBRARIES:
        raise TuneTLError(f"register_backbone: {name!r} is a bundled backbone or a library's name; pick another name")
    for arg, value in {"build": build, "blocks": blocks}.items():
        if not callable(value):
            raise TuneTLError(f"register_backbone({name!r}): {arg} must be a function, got {type(value).__name__}")
    if not isinstance(num_features, int) or num_features < 1:
        raise TuneTLError(f"register_backbone({name!r}): num_features must be a positive int, got {num_features!r}")
    if len(mean) != 3 or len(std) != 3:
        raise TuneTLError(f"register_backbone({name!r}): mean and std need three values (R, G, B)")
    return _add(BackboneFamily(name, build, blocks, num_features, input_size, tuple(mean), tuple(std), weights, pool, bundled=False))


def find(name: str) -> BackboneFamily | tuple[BackboneLibrary, str]:
    """The family ``name`` means, or (library, arch) for a library's model.

    An unprefixed name that is no family goes to the first library that takes it (torchvision's splittable
    families, then timm); failing that, to a library that has the name but cannot split it, whose build says why.

    Raises:
        TuneTLError: Nothing has that name; the message lists close names.
    """
    if name in _FAMILIES:
        return _FAMILIES[name]
    prefix, _, arch = name.rpartition("/")
    for explicit in (False, True):
        for library in _LIBRARIES.values():
            if prefix in ("", library.prefix) and library.claims(arch, explicit or prefix == library.prefix):
                return library, arch
    known = [n for n, f in _FAMILIES.items() if n == f.name]
    prefixed = [f"{lib.prefix}/{n}" for lib in _LIBRARIES.values() for n in lib.names()]
    close = difflib.get_close_matches(name, [*known, *prefixed], n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise TuneTLError(f"unknown backbone {name!r}: use {', '.join(known)}, torchvision/<name>, timm/<name> or a name given to "
                      f"tune_tl.register_backbone{hint}")


def shipped(names: Iterable[str]) -> tuple[BackboneFamily, ...]:
    """The user-registered families among ``names``: what trials in other processes must be told."""
    return tuple(_FAMILIES[n] for n in names if n in _FAMILIES and not _FAMILIES[n].bundled)


def restore(families: Iterable[BackboneFamily]) -> None:
    """Register ``families`` (from a ``TrialContext``) in this process: a Ray worker never ran ``register_backbone``."""
    for family in families:
        _add(replace(family, bundled=False))
