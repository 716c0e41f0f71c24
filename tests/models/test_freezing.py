"""Freeze policies: exactly the intended blocks train, frozen blocks stay fixed, BN modes behave."""

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from toy_models import toy_model

from tune_tl.errors import TuneTLError
from tune_tl.models import FreezePolicy, TransferModel, build_backbone, build_head, count_trainable_parameters


def trains(model) -> list[bool]:
    """Per block: do all its parameters require gradients (and are they all alike)?"""
    out = []
    for block in model.backbone.blocks:
        flags = {p.requires_grad for p in block.parameters()}
        assert len(flags) == 1, "a block is half frozen"
        out.append(flags.pop())
    return out


def bn_training(model) -> list[bool]:
    return [any(m.training for m in b.modules() if isinstance(m, _BatchNorm)) for b in model.backbone.blocks]


@pytest.mark.parametrize(
    "policy, expected",
    [
        (FreezePolicy("prefix", freeze_blocks=0), [True, True, True]),
        (FreezePolicy("prefix", freeze_blocks=2), [False, False, True]),
        (FreezePolicy("prefix", freeze_blocks=3), [False, False, False]),
        (FreezePolicy("surgical", train_block=0), [True, False, False]),
        (FreezePolicy("surgical", train_block=1), [False, True, False]),
        (FreezePolicy("head_only"), [False, False, False]),
        (FreezePolicy("full"), [True, True, True]),
    ],
)
def test_each_policy_trains_exactly_its_blocks_and_always_the_head(policy, expected):
    model = toy_model()
    model.apply_policy(policy)
    model.train()
    assert trains(model) == expected
    assert all(p.requires_grad for p in model.head.parameters())
    assert bn_training(model) == expected  # frozen blocks' BN stays in eval even after train()


def test_frozen_blocks_get_no_gradient_and_keep_their_batchnorm_statistics():
    model = toy_model()
    model.apply_policy(FreezePolicy("surgical", train_block=1))
    model.train()
    before = {k: v.clone() for k, v in model.features.state_dict().items()}
    model(torch.randn(8, 3, 16, 16)).sum().backward()
    blocks = model.backbone.blocks
    assert all(p.grad is None for b in (blocks[0], blocks[2]) for p in b.parameters())
    assert all(p.grad is not None for p in blocks[1].parameters())
    after = model.features.state_dict()
    assert torch.equal(before["0.1.running_mean"], after["0.1.running_mean"])  # frozen block 0
    assert torch.equal(before["2.1.running_mean"], after["2.1.running_mean"])  # frozen block 2
    assert not torch.equal(before["1.1.running_mean"], after["1.1.running_mean"])  # the trained block


def test_bn_train_off_keeps_trainable_blocks_statistics_but_learns_their_affine_weights():
    model = toy_model()
    model.apply_policy(FreezePolicy("full", bn_train=False))
    model.train()
    assert bn_training(model) == [False, False, False]
    assert trains(model) == [True, True, True]
    before = model.features.state_dict()["1.1.running_var"].clone()
    model(torch.randn(8, 3, 16, 16)).sum().backward()
    assert torch.equal(before, model.features.state_dict()["1.1.running_var"])
    assert model.backbone.blocks[1][1].weight.grad is not None


def test_a_fully_frozen_backbone_is_deterministic_in_train_mode_dropout_included():
    model = toy_model()
    model.apply_policy(FreezePolicy("head_only"))
    model.train()
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(model.features(x), model.features(x))
    assert model.head.training  # the head's own dropout still trains


def test_probing_freezes_the_backbone_and_switching_it_off_restores_the_policy():
    model = toy_model()
    model.apply_policy(FreezePolicy("prefix", freeze_blocks=1))
    model.set_probing(True)
    assert trains(model) == [False, False, False] and model.backbone_frozen
    model.set_probing(False)
    assert trains(model) == [False, True, True] and model.frozen_blocks == 1


def test_freeze_blocks_is_the_prefix_policy():
    model = toy_model()
    model.freeze_blocks(2)
    assert model.policy == FreezePolicy("prefix", freeze_blocks=2) and trains(model) == [False, False, True]


@pytest.mark.parametrize(
    "policy, message",
    [
        (FreezePolicy("prefix", freeze_blocks=4), "freeze_blocks must be an integer from 0 to 3"),
        (FreezePolicy("surgical", train_block=3), "train_block must be an integer from 0 to 2"),
        (FreezePolicy("surgical", train_block=-1), "train_block must be an integer from 0 to 2"),
        (FreezePolicy("middle"), "freeze_policy must be one of"),
    ],
)
def test_bad_policies_are_rejected_without_changing_the_model(policy, message):
    model = toy_model()
    model.apply_policy(FreezePolicy("head_only"))
    with pytest.raises(TuneTLError, match=message):
        model.apply_policy(policy)
    assert trains(model) == [False, False, False]


def test_linear_probe_on_lite0_trains_only_the_head():
    backbone = build_backbone("efficientnet_lite0")
    model = TransferModel(backbone, build_head("linear", backbone.num_features, 10))
    model.apply_policy(FreezePolicy("head_only"))
    assert count_trainable_parameters(model) == 1280 * 10 + 10
    model.apply_policy(FreezePolicy("surgical", train_block=8))  # the 1x1 head conv + its BN
    assert count_trainable_parameters(model) == 12810 + 320 * 1280 + 2 * 1280
