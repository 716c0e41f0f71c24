"""Regularisers of the fine-tuning loss: label smoothing, MixUp/CutMix, and L2-SP.

- Label smoothing is cross-entropy's own (``F.cross_entropy(label_smoothing=...)``), training loss only.
- MixUp and CutMix are torchvision's ``transforms.v2`` on the whole batch: they blend (or paste between)
  the batch's images and return soft targets, which ``F.cross_entropy`` takes as probabilities. With
  both on, each batch gets one of the two, as in torchvision's reference recipe.
- L2-SP (Li et al., 2018) pulls the trainable backbone weights toward their pretrained values
  (``l2sp / 2 × ||w − w0||²``) instead of toward zero as weight decay does.

Example:
    >>> mix = batch_mixer(RegulariseConfig(mixup_alpha=0.2), num_classes=10)
    >>> images, soft_targets = mix(images, labels)          # soft_targets: (B, 10) floats
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class RegulariseConfig:
    """The loss-side regularisers; the defaults switch every one off."""

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    l2sp: float = 0.0

    @property
    def mixes(self) -> bool:
        """Whether training inputs are mixed across images (then backbone features cannot be cached)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


Mixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def batch_mixer(cfg: RegulariseConfig, num_classes: int) -> Mixer | None:
    """``(images, int labels) → (mixed images, soft targets)``, or ``None`` when neither is on.

    Randomness comes from torch's global generator, which the loop seeds and checkpoints.
    """
    if not cfg.mixes:
        return None
    from torchvision.transforms import v2

    ops = []
    if cfg.mixup_alpha > 0:
        ops.append(v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes))
    if cfg.cutmix_alpha > 0:
        ops.append(v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes))
    mix = ops[0] if len(ops) == 1 else v2.RandomChoice(ops)

    def apply(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mix(images, labels.long())

    return apply


class L2SP:
    """``weight / 2 × Σ ||w − w0||²`` over the parameters of ``module`` that train now.

    ``w0`` is copied at construction, so build it from the pretrained model before any training
    (and before a resumed state is loaded). Frozen parameters (``requires_grad=False``) add nothing.
    """

    def __init__(self, module: nn.Module, weight: float):
        self.weight = float(weight)
        self.params = dict(module.named_parameters())
        self.anchor = {name: p.detach().clone() for name, p in self.params.items()}

    def __call__(self) -> torch.Tensor | None:
        """The penalty as a scalar tensor with gradients, or ``None`` when nothing trains."""
        terms = [(p.float() - self.anchor[name].float()).pow(2).sum() for name, p in self.params.items() if p.requires_grad]
        if not terms:
            return None
        return 0.5 * self.weight * torch.stack(terms).sum()


def l2sp_penalty(model: nn.Module, weight: float) -> L2SP | None:
    """The L2-SP penalty of ``model``'s backbone (``model.features``), or ``None`` when ``weight`` is 0."""
    if weight <= 0:
        return None
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module):
        raise ValueError("l2sp > 0 needs a model with a pretrained backbone at .features (a TransferModel)")
    return L2SP(features, weight)
