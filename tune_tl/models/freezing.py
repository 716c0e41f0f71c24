"""A backbone plus head that trains only what its freeze policy says, BatchNorm statistics included.

Freezing only ``requires_grad`` is not enough: a frozen block whose BatchNorm layers still run in train
mode keeps rewriting its running statistics from the new data, so the "frozen" features drift. Frozen
blocks are therefore kept entirely in eval mode (BatchNorm, dropout, drop-path), even after
``model.train()``: a frozen block computes a fixed function of its input, which is also what lets
``tune_tl.training.feature_cache`` reuse its output across epochs and trials.

Policies (:class:`FreezePolicy`):

* ``prefix``: freeze ``blocks[:freeze_blocks]``, train the rest.
* ``surgical``: train exactly ``blocks[train_block]`` (plus the head).
* ``head_only``: a linear probe; the whole backbone is frozen.
* ``full``: nothing is frozen.

``bn_train=False`` additionally keeps the BatchNorm layers of *trainable* blocks in eval mode (their
affine weights still learn; their running statistics stay the pretrained ones).

    >>> model = TransferModel(build_backbone("efficientnet_lite0"), build_head("linear", 1280, 10))
    >>> model.apply_policy(FreezePolicy("head_only"))
    >>> count_trainable_parameters(model)
    12810
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tune_tl.errors import TuneTLError
from tune_tl.models.backbones import Backbone

POLICIES = ("prefix", "surgical", "head_only", "full")


@dataclass(frozen=True)
class FreezePolicy:
    """Which backbone blocks train. ``freeze_blocks`` is read by ``prefix``, ``train_block`` by ``surgical``."""

    kind: str = "prefix"
    freeze_blocks: int = 0
    train_block: int = 0
    bn_train: bool = True

    def trainable_mask(self, num_blocks: int) -> list[bool]:
        """``mask[i]`` is whether block ``i`` trains.

        Raises:
            TuneTLError: Unknown policy, or a block index outside this backbone.
        """
        if self.kind == "prefix":
            k = _index(self.freeze_blocks, 0, num_blocks, "freeze_blocks")
            return [i >= k for i in range(num_blocks)]
        if self.kind == "surgical":
            b = _index(self.train_block, 0, num_blocks - 1, "train_block")
            return [i == b for i in range(num_blocks)]
        if self.kind == "head_only":
            return [False] * num_blocks
        if self.kind == "full":
            return [True] * num_blocks
        raise TuneTLError(f"freeze_policy must be one of {list(POLICIES)}, got {self.kind!r}")

    def frozen_prefix(self, num_blocks: int) -> int:
        """How many leading blocks never train: ``freeze_blocks`` (prefix), ``train_block`` (surgical), all, or none."""
        return leading_frozen(self.trainable_mask(num_blocks))


def leading_frozen(mask: Sequence[bool]) -> int:
    """How many leading blocks of ``mask`` (``trainable_mask``'s) do not train: the first trainable block's index."""
    return next((i for i, trains in enumerate(mask) if trains), len(mask))


def _index(value, low: int, high: int, key: str) -> int:
    original = value
    try:  # numpy ints pass; True, 1.5 and "1" do not
        value = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        value = None
    if value is None or not low <= value <= high:
        raise TuneTLError(f"{key} must be an integer from {low} to {high} for this backbone, got {original!r}")
    return value


class TransferModel(nn.Module):
    """``head(backbone.features(x))``, training only the blocks its policy allows.

    Attributes:
        backbone: The :class:`Backbone` (a plain attribute; its ``features`` is registered as ``features``).
        head: The classifier head.
        policy: The :class:`FreezePolicy` in force (``full`` after construction).
        probing: When true, the whole backbone is frozen regardless of the policy (the linear-probe
            phase of LP→FT fine-tuning); the policy applies again once it is switched off.
    """

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.features = backbone.features
        self.head = head
        self.backbone = backbone
        self.policy = FreezePolicy("full")
        self.probing = False
        self._mask = [True] * len(backbone.blocks)

    @property
    def num_blocks(self) -> int:
        return len(self.backbone.blocks)

    @property
    def frozen_blocks(self) -> int:
        """How many leading blocks are frozen now (``num_blocks`` = the whole backbone is fixed)."""
        return leading_frozen(self._mask)

    @property
    def backbone_frozen(self) -> bool:
        return not any(self._mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def from_block(self, start: int) -> nn.Module:
        """This model from ``blocks[start]`` on (then pooling, then the head): what runs on activations cached at
        the freeze boundary. ``model.from_block(k)(backbone.run_blocks(x, 0, k))`` equals ``model(x)``.

        Raises:
            ValueError: The backbone's blocks are not a chain (``Backbone.chainable``).
        """
        if not self.backbone.chainable:
            raise ValueError(f"backbone {self.backbone.name!r} cannot run from a block: its blocks are not a chain")
        return _FromBlock(self, start)

    def freeze_blocks(self, k: int) -> None:
        """Freeze ``blocks[:k]`` and unfreeze the rest: 0 fine-tunes everything, ``num_blocks`` is a linear probe.

        Raises:
            TuneTLError: ``k`` is not an integer in [0, num_blocks].
        """
        self.apply_policy(FreezePolicy("prefix", freeze_blocks=k, bn_train=self.policy.bn_train))

    def apply_policy(self, policy: FreezePolicy) -> None:
        """Make the policy's blocks (and the head) trainable and freeze every other block."""
        mask = policy.trainable_mask(self.num_blocks)  # validates before changing anything
        self.policy = policy
        self._set_mask(mask)

    def set_probing(self, probing: bool) -> None:
        """Freeze the whole backbone (``True``) or go back to the policy (``False``)."""
        self.probing = probing
        self._set_mask([False] * self.num_blocks if probing else self.policy.trainable_mask(self.num_blocks))

    def block_trains(self, index: int) -> bool:
        """Whether block ``index`` trains under the policy once probing is over."""
        return self.policy.trainable_mask(self.num_blocks)[index]

    def _set_mask(self, mask: list[bool]) -> None:
        self._mask = list(mask)
        for block, trains in zip(self.backbone.blocks, mask, strict=True):
            for param in block.parameters():
                param.requires_grad_(trains)
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferModel:
        """Set train/eval mode as usual, then put frozen blocks (and, with ``bn_train`` off, all BN) in eval."""
        super().train(mode)
        if not mode:
            return self
        if self.backbone_frozen:
            self.features.eval()  # also covers layers outside any block (pooling, functional dropout)
            return self
        for block, trains in zip(self.backbone.blocks, self._mask, strict=True):
            if not trains:
                block.eval()
            elif not self.policy.bn_train:
                for module in block.modules():
                    if isinstance(module, _BatchNorm):
                        module.eval()
        return self


class _FromBlock(nn.Module):
    """``model`` run from the output of its first ``start`` blocks; ``train()``/``eval()`` reach ``model``."""

    def __init__(self, model: TransferModel, start: int):
        super().__init__()
        self.model, self.start = model, start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backbone = self.model.backbone
        return self.model.head(backbone.pool(backbone.run_blocks(x, self.start)))


def count_trainable_parameters(module: nn.Module) -> int:
    """Number of scalar parameters that an optimiser would update."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
