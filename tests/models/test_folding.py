"""Frozen passes run a copy of the backbone with its batch norms folded into their convolutions: same outputs, fewer passes."""

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from tune_tl.models import build_backbone
from tune_tl.models.folding import folded, folded_blocks
from tune_tl.training.device import memory_format


def norms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


@pytest.fixture(scope="module")
def lite0():
    backbone = build_backbone("efficientnet_lite0")
    backbone.features.eval()
    return backbone


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.randn(4, 3, 64, 64).contiguous(memory_format=memory_format(torch.device("cpu")))


def test_lite0_folded_has_no_batch_norm_left_and_gives_the_same_features(lite0, images):
    before = {k: v.clone() for k, v in lite0.features.state_dict().items()}
    fast = folded(lite0.features, images[:2])
    assert fast is not lite0.features and norms(lite0.features) == 49 and norms(fast) == 0
    with torch.no_grad():
        torch.testing.assert_close(fast(images), lite0.features(images), rtol=1e-4, atol=1e-4)
    assert all(torch.equal(v, before[k]) for k, v in lite0.features.state_dict().items()), "the original is untouched"


def test_folded_blocks_run_the_same_chain_and_leave_the_backbone_as_it_was(lite0, images):
    fast = folded_blocks(lite0, images[:2])
    assert fast.name == lite0.name and fast.blocks is not lite0.blocks and fast.pool is lite0.pool
    assert sum(norms(b) for b in fast.blocks) == 0 and sum(norms(b) for b in lite0.blocks) == 49
    with torch.no_grad():
        for cut in (1, 5, 9):
            torch.testing.assert_close(fast.run_blocks(images, 0, cut), lite0.run_blocks(images, 0, cut), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fast.pool(fast.run_blocks(images)), lite0.features(images), rtol=1e-4, atol=1e-4)


def test_a_torchvision_resnet_folds_too():
    torch.manual_seed(0)
    model = resnet18(num_classes=10)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # statistics as if trained
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    fast = folded(model, x)
    assert norms(fast) == 0
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


class NormFirst(nn.Module):
    """Registers a convolution, then a batch norm of its width, but normalises its input before convolving."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.bn.running_mean.fill_(2.0)

    def forward(self, x):
        return self.conv(self.bn(x))


def test_a_module_that_runs_its_pair_in_another_order_is_run_unfolded():
    model = NormFirst().eval()
    assert folded(model, torch.randn(2, 3, 8, 8)) is model


def test_a_module_without_batch_norm_is_returned_as_it_is():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    assert folded(model, torch.randn(1, 3, 8, 8)) is model


def test_a_module_in_training_mode_is_returned_as_it_is():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert folded(model, torch.randn(2, 3, 8, 8)) is model and model.training
