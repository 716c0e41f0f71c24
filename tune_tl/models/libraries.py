"""The torchvision and timm libraries as backbone families: ``torchvision/<arch>`` and ``timm/<arch>``.

Their models describe themselves (feature width, preprocessing, input size from the weights' preset or
``pretrained_cfg``); what we add is the split into blocks. ``models.registry`` registers both.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from tune_tl.errors import TuneTLError
from tune_tl.models.backbone import Backbone, BackboneLibrary

# torchvision families whose layout we know how to split into blocks (the rest go to timm or fail clearly).
TORCHVISION_FAMILIES = ("resnet", "resnext", "wide_resnet", "regnet", "vgg", "alexnet", "squeezenet", "densenet",
                        "mobilenet_v2", "mobilenet_v3", "efficientnet_")


@functools.cache
def _torchvision_names() -> tuple[str, ...]:
    from torchvision import models

    return tuple(models.list_models(module=models))


def _torchvision_claims(arch: str, explicit: bool) -> bool:
    """An explicit ``torchvision/<arch>`` is taken when torchvision has it (its build says if it cannot be split);
    an unprefixed name only when its family can be split."""
    return arch in _torchvision_names() and (explicit or arch.startswith(TORCHVISION_FAMILIES))


def _timm_claims(arch: str, explicit: bool) -> bool:
    import timm

    return timm.is_model(arch)


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


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
    where = "; ".join(looked) or "nowhere: none are published"
    raise TuneTLError(f"ImageNet weights for timm/{arch} are not cached locally (looked in {where}); "
                      f"run timm.create_model({arch!r}, pretrained=True) once where there is internet and copy the cache, "
                      f"or pass weights=<path to a state-dict file> (or 'none')")


TORCHVISION = BackboneLibrary("torchvision", _torchvision_claims, _build_torchvision, _torchvision_names)
TIMM = BackboneLibrary("timm", _timm_claims, _build_timm, _timm_names)
