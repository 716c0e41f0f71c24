"""Backbones by name: a pooled-feature network, its ordered blocks and its input statistics.

One call covers every name the registry (``models.registry``) knows: the bundled EfficientNet-Lite0/1/2 (the
offline portfolio), torchvision, timm and the user's own (``tune_tl.register_backbone``), so the rest of the
package never asks where a model came from:

    >>> bb = build_backbone("efficientnet_lite0")  # bundled ImageNet weights, no network
    >>> x = torch.zeros(2, 3, 64, 64)
    >>> bb.features(x).shape
    torch.Size([2, 1280])
    >>> len(bb.blocks)
    9
    >>> boundary = bb.run_blocks(x, 0, 5)  # the output of the first five blocks
    >>> torch.equal(bb.pool(bb.run_blocks(boundary, 5)), bb.features(x))  # the blocks are a chain
    True

Nothing is ever downloaded: ``"imagenet"`` reads local caches only and says where it looked when they are
empty. Trials rebuild the backbone from the driver's ``features.state_dict()`` (Ray ships it once through
the object store), so every trial starts from identical weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from tune_tl.errors import TuneTLError
from tune_tl.models import registry
from tune_tl.models.backbone import Backbone, BackboneFamily

__all__ = ["Backbone", "Weights", "build_backbone", "native_size"]

Weights = str | os.PathLike | Mapping[str, torch.Tensor] | None


def build_backbone(name: str, weights: Weights = "imagenet") -> Backbone:
    """Build the backbone ``name`` with ``weights``.

    Args:
        name: ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2`` (bundled); ``torchvision/<arch>`` or
            ``timm/<arch>`` to pick a library; an unprefixed arch, which goes to torchvision when it has a supported model
            of that name, else timm; or a name given to ``tune_tl.register_backbone``.
        weights: ``"imagenet"``: the family's pretrained weights (a library's default ones, from the local cache only);
            ``"none"``/``None``: random init; a path to a state-dict file (of ``features``, of the whole
            classifier, whose head keys are dropped, or a ``model.pt`` saved by ``tune-tl retrain``); or an
            in-memory state dict of ``features``.

    Raises:
        TuneTLError: Unknown name, ImageNet weights not cached, or weights that do not fit.
    """
    found = registry.find(name)
    pretrained = isinstance(weights, str) and weights == "imagenet"
    if isinstance(found, BackboneFamily):
        backbone, head_keys, convert = _from_family(found, pretrained), found.head_keys, found.convert
    else:
        library, arch = found
        (backbone, head_keys), convert = library.build(arch, pretrained), None
    if isinstance(weights, Mapping):
        _load_features(backbone, weights, "the given state dict", head_keys)
    elif isinstance(weights, (str, os.PathLike)) and str(weights) not in ("imagenet", "none"):
        state = _without_transfer_head(_read_state_file(Path(weights)))
        _load_features(backbone, convert(state) if convert else state, f"file {weights}", head_keys)
    elif weights is not None and not isinstance(weights, str):
        raise TuneTLError(f"weights for backbone {name!r} must be 'imagenet', 'none', a file path or a state dict, "
                          f"not {type(weights).__name__}")
    _check_partition(backbone)
    return backbone


def native_size(name: str) -> int:
    """The image side ``name``'s pretrained weights were trained at (``resolution: native``).

    A family says it without being built; a library's model is built without weights.
    """
    found = registry.find(name)
    size = found.input_size if isinstance(found, BackboneFamily) else build_backbone(name, "none").input_size
    if not size:
        raise TuneTLError(f"backbone {name!r} does not say which input size its weights expect: write params.resolution "
                          "as numbers instead of 'native'")
    return int(size)


def _from_family(family: BackboneFamily, pretrained: bool) -> Backbone:
    """A registered family's network, split per its declaration, with its pretrained weights when asked."""
    model = family.build()
    backbone = Backbone(family.name, model, list(family.blocks(model)), family.num_features, family.mean, family.std,
                        family.input_size, family.pool(model) if family.pool else None)
    if pretrained:
        if family.weights is None:
            raise TuneTLError(f"backbone {family.name!r} has no pretrained weights: set backbone.weights to 'none' or a "
                              "state-dict file, or register it with weights=...")
        if callable(family.weights):
            state, source = dict(family.weights()), f"backbone {family.name!r}'s registered weights"
        else:
            state, source = _read_state_file(Path(family.weights)), f"file {family.weights}"
        _load_features(backbone, family.convert(state) if family.convert else state, source, family.head_keys)
    return backbone


def _read_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save``; ``{"state_dict": ...}`` and ``{"model": ...}`` are unwrapped."""
    if not path.is_file():
        raise TuneTLError(f"weights file {path} does not exist; pass 'imagenet', 'none' or the path of a state-dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and unsafe-type errors all mean the same thing to the user
        raise TuneTLError(f"weights file {path} is not a readable state dict ({exc}); "
                          "save one with torch.save(model.state_dict(), path)") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TuneTLError(f"weights file {path} does not hold a state dict (name -> tensor); "
                          "save one with torch.save(model.state_dict(), path)")
    return dict(state)


def _without_transfer_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``TransferModel`` state dict (``features.*`` + ``head.*``, as ``tune-tl retrain`` saves) -> features only."""
    if any(k.startswith("head.") for k in state) and all(k.startswith(("features.", "head.")) for k in state):
        return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return state


def _load_features(backbone: Backbone, state: Mapping[str, torch.Tensor], source: str, heads: tuple[str, ...]) -> None:
    """Load ``state`` into ``backbone.features`` exactly, ignoring only the classifier's keys (``heads``)."""
    own = backbone.features.state_dict()
    problems = {
        "missing": [k for k in own if k not in state],
        "unexpected": [k for k in state if k not in own and not k.startswith(heads)],
        "wrong shape": [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                        if k in state and state[k].shape != v.shape],
    }
    found = [f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for what, keys in problems.items() if keys]
    if found:
        raise TuneTLError(f"weights from {source} do not fit backbone {backbone.name!r} ({'; '.join(found)}); "
                          "pass weights saved from the same architecture")
    backbone.features.load_state_dict({k: state[k] for k in own})


def _check_partition(backbone: Backbone) -> None:
    """Every parameter of ``features`` in exactly one block: freezing by block relies on it."""
    owner: dict[int, int] = {}
    for index, block in enumerate(backbone.blocks):
        for param in block.parameters():
            if owner.setdefault(id(param), index) != index:
                raise TuneTLError(f"backbone {backbone.name!r} has a parameter in two blocks; pick another model")
    loose = [n for n, p in backbone.features.named_parameters() if id(p) not in owner]
    if loose or len(owner) != len(list(backbone.features.parameters())):
        raise TuneTLError(f"backbone {backbone.name!r} has parameters outside its blocks ({', '.join(loose[:3])}); "
                          "pick another model")
