"""Optimizer parameter groups with a learning-rate scale per depth (head multiplier, layer-wise decay).

Depth counts from the head: the head is depth 0 and gets ``head_lr_mult``; the last backbone block is
depth 1, the stem is depth ``num_blocks``; block ``i`` gets ``layer_decay ** (num_blocks - i)``. With
``layer_decay < 1`` early, generic blocks move less than late, task-specific ones (as in BEiT/timm's
layer decay). Each group carries ``lr_scale``; the training loop sets ``lr = schedule × lr_scale``.

Groups hold every parameter the model's *policy* trains, including blocks still frozen by the linear-probe
phase: their gradients are ``None`` until the phase ends, and optimizers skip such parameters, so one
optimizer serves both phases.

    >>> groups = param_groups(model, head_lr_mult=10.0, layer_decay=0.7)
    >>> [g["lr_scale"] for g in groups][:2]
    [10.0, 0.7]
"""

from __future__ import annotations

from tune_tl.errors import TuneTLError
from tune_tl.models.freezing import TransferModel


def param_groups(model: TransferModel, head_lr_mult: float = 1.0, layer_decay: float = 1.0) -> list[dict]:
    """One group for the head and one per block the policy trains, each with ``params`` and ``lr_scale``.

    Raises:
        TuneTLError: A non-positive ``head_lr_mult`` or a ``layer_decay`` outside (0, 1].
    """
    if not head_lr_mult > 0:
        raise TuneTLError(f"head_lr_mult must be positive, got {head_lr_mult}")
    if not 0 < layer_decay <= 1:
        raise TuneTLError(f"layer_decay must be in (0, 1], got {layer_decay}")
    groups = [{"params": list(model.head.parameters()), "lr_scale": float(head_lr_mult), "name": "head"}]
    n = model.num_blocks
    for index in reversed(range(n)):
        params = list(model.backbone.blocks[index].parameters())
        if params and model.block_trains(index):
            groups.append({"params": params, "lr_scale": float(layer_decay ** (n - index)), "name": f"block{index}"})
    return groups
