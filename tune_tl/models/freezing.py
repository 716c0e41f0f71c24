"""A backbone plus head that can freeze its first blocks, BatchNorm statistics included.

Freezing only ``requires_grad`` is not enough: a frozen block whose BatchNorm layers still run in train
mode keeps rewriting its running statistics from the new data, so the "frozen" features drift. Frozen
blocks therefore keep their BatchNorm layers in eval mode, even after ``model.train()``.

    >>> model = TransferModel(build_backbone("efficientnet_lite0"), build_head("linear", 1280, 10))
    >>> model.freeze_blocks(model.num_blocks)  # linear probe
    >>> count_trainable_parameters(model)
    12810
"""

from __future__ import annotations

import operator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tune_tl.errors import TuneTLError
from tune_tl.models.backbones import Backbone


class TransferModel(nn.Module):
    """``head(backbone.features(x))``, with the first ``k`` backbone blocks frozen on request.

    Attributes:
        backbone: The :class:`Backbone` (a plain attribute; its ``features`` is registered as ``features``).
        head: The classifier head.
        frozen_blocks: How many leading blocks are frozen (0 after construction).
    """

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.features = backbone.features
        self.head = head
        self.backbone = backbone
        self.frozen_blocks = 0

    @property
    def num_blocks(self) -> int:
        return len(self.backbone.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def freeze_blocks(self, k: int) -> None:
        """Freeze ``blocks[:k]`` and unfreeze the rest: 0 fine-tunes everything, ``num_blocks`` is a linear probe.

        Raises:
            TuneTLError: ``k`` is not an integer in [0, num_blocks].
        """
        original = k
        try:
            k = None if isinstance(k, bool) else operator.index(k)  # numpy ints pass; True and 1.5 do not
        except TypeError:
            k = None
        if k is None or not 0 <= k <= self.num_blocks:
            raise TuneTLError(f"freeze_blocks must be an integer from 0 to {self.num_blocks} for backbone "
                              f"{self.backbone.name!r}, got {original!r}")
        for index, block in enumerate(self.backbone.blocks):
            for param in block.parameters():
                param.requires_grad_(index >= k)
        self.frozen_blocks = k
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferModel:
        """Set train/eval mode as usual, then put BatchNorm layers of frozen blocks back in eval mode."""
        super().train(mode)
        for block in self.backbone.blocks[: self.frozen_blocks]:
            for module in block.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self


def count_trainable_parameters(module: nn.Module) -> int:
    """Number of scalar parameters that an optimiser would update."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
