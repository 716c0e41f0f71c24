import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tune_tl.errors import TuneTLError
from tune_tl.models import TransferModel, build_backbone, build_head, count_trainable_parameters


def _model(backbone, num_classes=3):
    return TransferModel(backbone, build_head("linear", backbone.num_features, num_classes))


def _backward(model, resolution=16):
    model.train()
    x, y = torch.randn(4, 3, resolution, resolution), torch.tensor([0, 1, 2, 0])
    F.cross_entropy(model(x), y).backward()


def _norms(block):
    return [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]


def test_transfer_model_applies_the_head_to_the_pooled_features(toy_backbone):
    model = _model(toy_backbone)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 3)
    assert model.num_blocks == 2 and model.backbone is toy_backbone
    assert {k.split(".")[0] for k in model.state_dict()} == {"features", "head"}


def test_frozen_blocks_get_no_gradients_and_the_rest_do(toy_backbone):
    model = _model(toy_backbone)
    model.freeze_blocks(1)
    _backward(model)
    assert all(p.grad is None for p in toy_backbone.blocks[0].parameters())
    assert all(p.grad is not None for p in toy_backbone.blocks[1].parameters())
    assert all(p.grad is not None for p in model.head.parameters())


def test_frozen_batchnorm_keeps_its_running_statistics_in_train_mode(toy_backbone):
    model = _model(toy_backbone)
    model.freeze_blocks(1)
    frozen, trained = _norms(toy_backbone.blocks[0])[0], _norms(toy_backbone.blocks[1])[0]
    before_frozen, before_trained = frozen.running_mean.clone(), trained.running_mean.clone()
    model.train()
    for _ in range(3):
        model(torch.randn(4, 3, 16, 16) + 2.0)
    assert torch.equal(frozen.running_mean, before_frozen)
    assert not torch.equal(trained.running_mean, before_trained)


def test_model_train_keeps_frozen_batchnorm_in_eval_mode(toy_backbone):
    model = _model(toy_backbone)
    model.freeze_blocks(1)
    model.eval()
    model.train()
    assert model.training
    assert not _norms(toy_backbone.blocks[0])[0].training
    assert _norms(toy_backbone.blocks[1])[0].training


def test_freezing_zero_blocks_unfreezes_everything_again(toy_backbone):
    model = _model(toy_backbone)
    model.freeze_blocks(2)
    model.freeze_blocks(0)
    assert count_trainable_parameters(model) == sum(p.numel() for p in model.parameters())
    assert all(m.training for m in model.modules())


def test_freezing_every_block_leaves_only_the_head_trainable(toy_backbone):
    model = _model(toy_backbone)
    model.freeze_blocks(model.num_blocks)
    assert count_trainable_parameters(model) == count_trainable_parameters(model.head) == 8 * 3 + 3


@pytest.mark.parametrize("k", [-1, 3, 1.5, True, "1"])
def test_freeze_blocks_outside_zero_to_num_blocks_is_rejected_naming_freeze_blocks(toy_backbone, k):
    with pytest.raises(TuneTLError, match=r"freeze_blocks must be an integer from 0 to 2"):
        _model(toy_backbone).freeze_blocks(k)


def test_lite0_frozen_up_to_a_stage_trains_only_the_later_blocks_and_head():
    backbone = build_backbone("efficientnet_lite0", "none")
    model = _model(backbone)
    model.freeze_blocks(5)
    _backward(model, resolution=32)
    assert all(p.grad is None for block in backbone.blocks[:5] for p in block.parameters())
    assert all(p.grad is not None for block in backbone.blocks[5:] for p in block.parameters())
    later = sum(p.numel() for block in backbone.blocks[5:] for p in block.parameters())
    assert count_trainable_parameters(model) == later + count_trainable_parameters(model.head)
    assert not any(m.training for m in backbone.blocks[0].modules() if isinstance(m, nn.BatchNorm2d))
