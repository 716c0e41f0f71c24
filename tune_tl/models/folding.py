"""Batch norm folded into the convolution before it, for passes that only read a frozen backbone.

In eval mode a BatchNorm2d is a per-channel scale and shift of its convolution's output, so it can be
written into that convolution's weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and its own
pass over the activations disappears. On 2 CPU cores that pass was a quarter of the probe's one pass (Lite0,
2,000 images at 224 px: 13.7 of 57 s); folded, the probe took 39 s. The passes that run a backbone without training it (the probe's
pooled features, the kept freeze boundaries, a trial's own boundary cache) run a folded copy, and so do the passes of a
trained network that only predict (the test and ensemble passes at a search's end, ``tune-tl predict``: Lite1 at 240 px,
128 images, 4.97 -> 3.42 s); training and validation of a fine-tune keep the model as it is.

A pair is folded when a convolution's next sibling module is a batch norm of its width (timm's and
torchvision's blocks register them in the order they run); the copy is then checked against the original
on one batch and used only if it agrees, so a module that registers them otherwise is run unfolded.

    >>> fast = folded(backbone.features, x[:2])  # an eval-mode copy, or ``backbone.features`` itself
    >>> fast_blocks = folded_blocks(backbone, x[:2])  # ``backbone`` with folded copies of its blocks
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import sys

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from tune_tl.models.backbone import Backbone

log = logging.getLogger(__name__)

#: How far a folded copy's outputs may be from the original's, relative to their largest magnitude (float32 sums in
#: another order differ by about 1e-6 of it).
TOLERANCE = 1e-4


@torch.no_grad()
def folded(module: nn.Module, example: torch.Tensor, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A copy of ``module`` with every foldable batch norm folded into its convolution; ``module`` itself when it is in
    training mode (its batch norms use the batch's statistics), none folds, or the copy's output on ``example`` is
    not the original's. With another ``dtype`` (an eval-mode ``module``), a copy in it: folded and checked in float32
    first, then cast (its inputs must be cast too)."""
    if module.training:
        return module
    fast = copy.deepcopy(module)
    if not sum(_fold_children(parent) for parent in list(fast.modules())):
        fast = module
    else:
        expected, got = module(example), fast(example)
        if not torch.allclose(got, expected, rtol=0, atol=TOLERANCE * max(float(expected.abs().max()), 1.0)):
            log.debug("folding the batch norms of %s changed its outputs: it runs unfolded", type(module).__name__)
            fast = module
    if dtype == torch.float32:
        return fast
    return (copy.deepcopy(fast) if fast is module else fast).to(dtype)


def folded_blocks(backbone: Backbone, example: torch.Tensor, dtype: torch.dtype = torch.float32) -> Backbone:
    """``backbone`` with its blocks (a chain, in eval mode) replaced by one folded copy of them (``folded``)."""
    chain = nn.Sequential(*backbone.blocks)
    chain.training = False  # the blocks' own modes decide (``eval()`` would set theirs too)
    fast = folded(chain, example, dtype)
    return backbone if fast is chain else dataclasses.replace(backbone, blocks=list(fast))


def _fold_children(parent: nn.Module) -> int:
    """Fold each (convolution, batch norm) pair among ``parent``'s direct children, in place; how many it folded."""
    children = list(parent.named_children())
    count = 0
    for (conv_name, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
        if isinstance(conv, nn.Conv2d) and not conv.training and _affine_in_eval(bn) and bn.num_features == conv.out_channels:
            fused = fuse_conv_bn_eval(conv, bn)
            if conv.weight.is_contiguous(memory_format=torch.channels_last):  # as the trial laid it out (training.device)
                fused.weight.data = fused.weight.data.contiguous(memory_format=torch.channels_last)
            setattr(parent, conv_name, fused)
            setattr(parent, bn_name, nn.Identity() if type(bn) is nn.BatchNorm2d else nn.Sequential(bn.drop, bn.act))
            count += 1
    return count


def _affine_in_eval(module: nn.Module) -> bool:
    """A batch norm whose eval forward is its running statistics' affine map (then, for timm's, dropout and activation)."""
    return type(module) in _batch_norms() and module.running_var is not None and not module.training


def _batch_norms() -> tuple[type[nn.Module], ...]:
    """``nn.BatchNorm2d``, and timm's ``BatchNormAct2d`` once timm is loaded: until then no module can be one, and
    importing timm (with torchvision) costs a process about 2 s of CPU that a search on other backbones never needs."""
    timm_layers = sys.modules.get("timm.layers")
    return (nn.BatchNorm2d,) if timm_layers is None else (nn.BatchNorm2d, timm_layers.BatchNormAct2d)
