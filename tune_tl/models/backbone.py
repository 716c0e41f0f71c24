"""What a backbone is (``Backbone``) and how a family of them is declared (``BackboneFamily``, ``BackboneLibrary``).

A family is one named network (timm's ``register_model`` plus its ``pretrained_cfg`` in one record): how to
build it, its blocks, its feature width, its native input size, its preprocessing and where its weights come
from. A library is a namespace of many (``torchvision/<arch>``, ``timm/<arch>``) whose models describe
themselves. ``models.registry`` holds both; ``models.backbones.build_backbone`` turns a name into a ``Backbone``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

Stats = tuple[float, float, float]
IMAGENET_MEAN: Stats = (0.485, 0.456, 0.406)
IMAGENET_STD: Stats = (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    """A feature extractor split into blocks that can be frozen from the stem up.

    Attributes:
        name: Canonical name: ``efficientnet_lite0``/``1``/``2``, ``torchvision/<arch>``, ``timm/<arch>``, or a
            name given to ``tune_tl.register_backbone``.
        features: Normalised float images (N, 3, H, W) -> pooled features (N, num_features).
        blocks: Stem first, last stage last; every parameter of ``features`` is in exactly one block.
        num_features: Width of the pooled features.
        mean: Per-channel mean the weights expect (after scaling pixels to 0..1).
        std: Per-channel standard deviation the weights expect.
        input_size: Image side the weights were trained at (Lite0 224, Lite1 240, Lite2 260); ``None`` if unknown.
        pool: What ``features`` does after its last block (global pooling, flatten; a timm model's pooled
            dropout) when the blocks are a chain: then ``features(x) == pool(run_blocks(x))``, and a frozen
            prefix's output can be cached (``training.boundary_cache``). Set for the bundled Lite models and
            the torchvision families; ``None`` for timm models, whose blocks are parameter groups that
            cannot run one after the other.
    """

    name: str
    features: nn.Module
    blocks: list[nn.Module]
    num_features: int
    mean: Stats
    std: Stats
    input_size: int | None = None
    pool: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def chainable(self) -> bool:
        """Whether the blocks run one after the other (``run_blocks``), which boundary caching needs."""
        return self.pool is not None

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """``blocks[start:stop]`` applied in turn to ``x``, the output of ``blocks[:start]`` (images when 0).

        Raises:
            ValueError: The blocks are not a chain (``pool`` is ``None``).
        """
        if self.pool is None:
            raise ValueError(f"backbone {self.name!r}: its blocks are parameter groups, not a chain of modules")
        for block in self.blocks[start:stop]:
            x = block(x)
        return x

    @property
    def data_config(self) -> dict:
        """Preprocessing the weights expect, as timm's ``resolve_model_data_config`` names it."""
        return {"input_size": self.input_size, "mean": self.mean, "std": self.std}


#: Where a family's pretrained weights come from: a state-dict file, or a function that returns one.
WeightsSource = str | os.PathLike | Callable[[], Mapping[str, torch.Tensor]] | None


@dataclass(frozen=True)
class BackboneFamily:
    """One named backbone: how to build it and what its weights expect.

    Attributes:
        name: The name space files use (``backbone.name``).
        build: A fresh, randomly initialised network: normalised images (N, 3, H, W) -> pooled features (N, num_features).
        blocks: The network's blocks, stem first; every parameter in exactly one (the freezing unit).
        num_features: Width of the pooled features.
        input_size: The side the pretrained weights were trained at (``resolution: native``); ``None`` if unknown.
        mean: Per-channel mean the weights expect, pixels scaled to 0..1.
        std: Per-channel standard deviation the weights expect.
        weights: The pretrained weights (``backbone.weights: imagenet``): a state-dict file or a function returning
            one; ``None``: there are none (``weights: none`` or a file then).
        pool: What the network does after its last block, when running the blocks in turn then ``pool`` gives its
            output (frozen-prefix activations can then be cached); ``None``: the blocks are not a chain.
        head_keys: Key prefixes of a classifier that weight files may hold; dropped on load.
        convert: Turns a weights file in another naming into this network's (the Lites' original files).
        aliases: Other names that mean this family.
        bundled: Shipped with tune_tl (every process knows it); ``False`` for ``register_backbone``'s, which
            travel to trials with the search's context.
    """

    name: str
    build: Callable[[], nn.Module]
    blocks: Callable[[nn.Module], Sequence[nn.Module]]
    num_features: int
    input_size: int | None = None
    mean: Stats = IMAGENET_MEAN
    std: Stats = IMAGENET_STD
    weights: WeightsSource = None
    pool: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]] | None = None
    head_keys: tuple[str, ...] = ()
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    aliases: tuple[str, ...] = ()
    bundled: bool = True


@dataclass(frozen=True)
class BackboneLibrary:
    """A library whose models are named ``<prefix>/<arch>`` and describe themselves (torchvision, timm).

    Attributes:
        prefix: ``torchvision`` or ``timm``.
        claims: ``(arch, explicit)`` -> whether the library takes ``arch``; ``explicit`` when the name carried the
            prefix (an unprefixed name goes to the first library that claims it).
        build: ``(arch, pretrained)`` -> (the backbone, the key prefixes of the classifier its weight files hold).
        names: Every arch it has (for "did you mean").
    """

    prefix: str
    claims: Callable[[str, bool], bool]
    build: Callable[[str, bool], tuple[Backbone, tuple[str, ...]]]
    names: Callable[[], Iterable[str]]
