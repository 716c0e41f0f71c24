"""The backbone registry: names resolve through it, and a user's own network can be added from Python."""

import pickle

import pytest
import torch
from torch import nn

import tune_tl
from tune_tl.errors import TuneTLError
from tune_tl.models import build_backbone, registry
from tune_tl.models.backbone import BackboneFamily
from tune_tl.models.backbones import native_size


def _two_blocks() -> nn.Module:
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
                         nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _blocks(model):
    return list(model[:2])


def _pool(model):
    return model[2:]


def _seeded():
    torch.manual_seed(7)
    return _two_blocks().state_dict()


@pytest.fixture
def registered():
    family = tune_tl.register_backbone("test_two_blocks", _two_blocks, blocks=_blocks, num_features=6, input_size=48,
                                       mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), weights=_seeded, pool=_pool)
    yield family
    registry._FAMILIES.pop("test_two_blocks", None)


def test_a_registered_backbone_builds_by_name_with_its_blocks_preprocessing_and_pretrained_weights(registered):
    backbone = build_backbone("test_two_blocks")
    assert backbone.name == "test_two_blocks" and len(backbone.blocks) == 2 and backbone.num_features == 6
    assert backbone.data_config == {"input_size": 48, "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    assert all(torch.equal(v, _seeded()[k]) for k, v in backbone.features.state_dict().items())
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(backbone.pool(backbone.run_blocks(x)), backbone.features(x))
    assert native_size("test_two_blocks") == 48


def test_a_registered_backbone_takes_weights_none_a_file_or_a_state_dict(registered, tmp_path):
    torch.save(_seeded(), tmp_path / "w.pt")
    from_file = build_backbone("test_two_blocks", tmp_path / "w.pt").features.state_dict()
    from_state = build_backbone("test_two_blocks", _seeded()).features.state_dict()
    assert all(torch.equal(from_file[k], v) and torch.equal(from_state[k], v) for k, v in _seeded().items())
    assert not torch.equal(build_backbone("test_two_blocks", "none").features.state_dict()["0.0.weight"], _seeded()["0.0.weight"])


def test_pretrained_weights_of_a_backbone_registered_without_them_are_refused_naming_it():
    tune_tl.register_backbone("test_no_weights", _two_blocks, blocks=_blocks, num_features=6)
    try:
        with pytest.raises(TuneTLError, match=r"'test_no_weights' has no pretrained weights.*'none'"):
            build_backbone("test_no_weights", "imagenet")
    finally:
        registry._FAMILIES.pop("test_no_weights")


def test_blocks_that_miss_a_parameter_are_refused_when_built():
    tune_tl.register_backbone("test_loose", _two_blocks, blocks=lambda m: [m[0]], num_features=6)
    try:
        with pytest.raises(TuneTLError, match=r"parameters outside its blocks \(1\.0\.weight"):
            build_backbone("test_loose", "none")
    finally:
        registry._FAMILIES.pop("test_loose")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "timm/efficientnet_lite1", "torchvision/mine", "timm/mine", ""])
def test_bundled_names_and_library_prefixes_cannot_be_registered(name):
    with pytest.raises(TuneTLError, match="register_backbone"):
        tune_tl.register_backbone(name, _two_blocks, blocks=_blocks, num_features=6)


def test_wrong_argument_types_are_refused_naming_the_argument():
    with pytest.raises(TuneTLError, match="blocks must be a function"):
        tune_tl.register_backbone("test_bad", _two_blocks, blocks=[1, 2], num_features=6)
    with pytest.raises(TuneTLError, match="num_features must be a positive int"):
        tune_tl.register_backbone("test_bad", _two_blocks, blocks=_blocks, num_features=0)
    assert "test_bad" not in registry._FAMILIES


def test_an_unknown_name_lists_the_registered_ones(registered):
    with pytest.raises(TuneTLError, match=r"unknown backbone 'test_two_block'.*use efficientnet_lite0.*test_two_blocks"):
        build_backbone("test_two_block", "none")


def test_the_bundled_lites_and_both_libraries_resolve_through_the_registry():
    assert isinstance(registry.find("efficientnet_lite0"), BackboneFamily)
    assert registry.find("timm/efficientnet_lite2").name == "efficientnet_lite2"
    assert [(lib.prefix, arch) for lib, arch in (registry.find("resnet18"), registry.find("timm/resnet18"))] == \
        [("torchvision", "resnet18"), ("timm", "resnet18")]


def test_only_user_families_are_shipped_and_a_fresh_process_gets_them_back(registered):
    shipped = registry.shipped(["efficientnet_lite0", "test_two_blocks"])
    assert shipped == (registered,)
    registry._FAMILIES.pop("test_two_blocks")  # as in a Ray worker that never ran register_backbone
    with pytest.raises(TuneTLError, match="unknown backbone"):
        build_backbone("test_two_blocks", "none")
    registry.restore(pickle.loads(pickle.dumps(shipped)))
    assert build_backbone("test_two_blocks", _seeded()).num_features == 6


def test_the_tests_tiny_backbone_has_nine_chained_blocks_and_the_same_weights_in_every_process():
    import tiny_backbone

    backbone = build_backbone(tiny_backbone.NAME)
    assert len(backbone.blocks) == 9 and backbone.chainable and native_size(tiny_backbone.NAME) == 32
    again = tiny_backbone.seeded_weights()
    assert all(torch.equal(v, again[k]) for k, v in backbone.features.state_dict().items())
    shipped = pickle.loads(__import__("ray").cloudpickle.dumps(registry.shipped([tiny_backbone.NAME])))
    assert shipped[0].build.__module__ == "tiny_backbone" and len(list(shipped[0].blocks(shipped[0].build()))) == 9
