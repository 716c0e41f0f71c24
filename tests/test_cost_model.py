"""The cost model predicts an epoch's FLOPs from the config alone: counted once per block, ordered as training costs."""

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from toy_models import toy_backbone

from tune_tl.config import load_space
from tune_tl.config.params import TrialConfig
from tune_tl.models import build_backbone
from tune_tl.search.plan import plan_for
from tune_tl.training.cost_model import CostModel, block_flops, seconds_per_flop


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0", "none")


@pytest.fixture(scope="module")
def model(lite0):
    blocks = block_flops(lite0, (32, 64))
    return CostModel({"efficientnet_lite0": blocks}, {"efficientnet_lite0": lite0.num_features}, num_classes=10,
                     train_images=1437, val_images=360, chainable={"efficientnet_lite0": lite0.chainable})


def cost(model, epoch=1, **params):
    return model.epoch_cost(TrialConfig.from_dict({"resolution": 32, **params}), epoch)


def whole_network_flops(backbone, resolution):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        backbone.features.eval()(torch.zeros(1, 3, resolution, resolution))
    return counter.get_total_flops()


@pytest.mark.parametrize("resolution", [32, 64])
def test_block_flops_add_up_to_the_whole_network_and_are_the_same_every_time(lite0, resolution):
    flops = block_flops(lite0, [resolution])[resolution]
    assert len(flops) == len(lite0.blocks) == 9 and all(f > 0 for f in flops)
    assert sum(flops) == whole_network_flops(lite0, resolution)
    assert block_flops(lite0, [resolution])[resolution] == flops == block_flops(lite0, [16, resolution])[resolution]
    assert not lite0.features._forward_hooks and all(not m._forward_hooks for m in lite0.features.modules())


def test_block_flops_of_a_backbone_whose_blocks_are_its_own_modules():
    toy = toy_backbone()
    flops = block_flops(toy, [16])[16]
    assert toy.features.training, "counting leaves the network in the mode it found it"
    assert sum(flops) == whole_network_flops(toy, 16) and flops[0] == 2 * 3 * 9 * 8 * 8 * 8  # conv 3→8, 3×3, 8×8 out


def test_more_trainable_blocks_cost_more(model):
    costs = [cost(model, freeze_policy="prefix", freeze_blocks=k) for k in range(10)]
    assert costs == sorted(costs, reverse=True) and len(set(costs)) == 10
    assert cost(model, freeze_policy="full") == costs[0]


def test_a_cached_head_only_epoch_costs_far_less_than_an_uncached_one(model):
    uncached = cost(model, epoch=2, freeze_policy="head_only", aug_flip=1)
    cached = cost(model, epoch=2, freeze_policy="head_only")
    assert cached < uncached / 100
    # The epoch that first reads the cache pays for filling it: one forward of every image.
    assert cost(model, epoch=1, freeze_policy="head_only") == pytest.approx(uncached, rel=0.01)
    off = CostModel(model.blocks, model.num_features, model.num_classes, model.train_images, model.val_images, feature_cache=False)
    assert cost(off, epoch=2, freeze_policy="head_only") == uncached


def test_a_larger_resolution_costs_more(model):
    for params in ({"freeze_policy": "full"}, {"freeze_policy": "prefix", "freeze_blocks": 6},
                   {"freeze_policy": "head_only", "aug_flip": 1}):
        assert cost(model, **{**params, "resolution": 64}) > 3 * cost(model, **params)


def test_lp_ft_costs_a_probe_epoch_then_fine_tune_epochs(model):
    lpft = TrialConfig.from_dict({"resolution": 32, "freeze_policy": "full", "lp_epochs": 1})
    assert model.epoch_cost(lpft, 1) == cost(model, freeze_policy="head_only")
    assert model.epoch_cost(lpft, 2) == model.epoch_cost(lpft, 3) == cost(model, freeze_policy="full")
    assert model.trial_cost(lpft, 3) == sum(model.epoch_cost(lpft, e) for e in (1, 2, 3))


def test_a_surgical_block_costs_its_backward_plus_the_gradient_through_the_blocks_above(model):
    flops = model.blocks["efficientnet_lite0"][32]
    top = cost(model, freeze_policy="surgical", train_block=8)
    assert cost(model, freeze_policy="surgical", train_block=0) - top == pytest.approx(model.train_images * (flops[0] + sum(flops[1:8])))


def test_an_mlp_head_costs_more_than_a_linear_one_and_batch_size_costs_nothing(model):
    assert cost(model, freeze_policy="full", head="mlp", head_hidden=256) > cost(model, freeze_policy="full")
    assert cost(model, freeze_policy="full", batch_size=16) == cost(model, freeze_policy="full", batch_size=256)


def test_the_boundary_cache_makes_a_frozen_prefix_cost_only_the_blocks_above_it(model):
    unchained = dataclasses.replace(model, chainable={name: False for name in model.chainable})
    before = cost(unchained, epoch=2, freeze_policy="prefix", freeze_blocks=8)
    after = cost(model, epoch=2, freeze_policy="prefix", freeze_blocks=8)
    assert after < before / 5
    assert cost(model, epoch=2, freeze_policy="prefix", freeze_blocks=8, aug_flip=1) == before, "augmentation keeps it off"
    assert model.chainable == {"efficientnet_lite0": True}, "the bundled Lites can run a suffix of their blocks"
    assert cost(model, epoch=1, freeze_policy="prefix", freeze_blocks=8) > after, "the first epoch fills it"


def test_the_model_round_trips_through_json_and_names_what_it_cannot_predict(model):
    assert CostModel.from_dict(model.to_dict()) == model
    with pytest.raises(ValueError, match="at 48 px"):
        cost(model, resolution=48)


def test_the_rung_unit_is_a_fine_tune_epoch_of_the_first_backbone_at_its_largest_resolution(model):
    spec = load_space()  # one backbone at 32 px
    assert plan_for(spec, 9, cost_model=model).rung_unit == cost(model, freeze_policy="full")


def test_seconds_per_flop_is_the_median_ratio_and_ignores_unmeasured_epochs():
    assert seconds_per_flop([1e9, 2e9, 1e9], [1.0, 2.0, 50.0]) == pytest.approx(1e-9)
    assert seconds_per_flop([1e9], [float("nan")]) is None
