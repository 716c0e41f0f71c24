import functools

import pytest
import torch
import torchvision
from torch import nn

from tune_tl.errors import TuneTLError
from tune_tl.models import build_backbone

TORCHVISION = ["resnet18", "resnet34", "resnet50", "vgg16", "alexnet", "squeezenet1_0", "densenet121",
               "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0"]
BLOCK_COUNTS = {"resnet18": 5, "vgg16": 5, "alexnet": 3, "squeezenet1_0": 4, "densenet121": 6,
                "mobilenet_v3_small": 13, "efficientnet_b0": 9, "efficientnet_lite0": 9,
                "efficientnet_lite1": 9, "efficientnet_lite2": 9}


@functools.cache
def _random_init(name):
    """Built once per module: the structure tests below only read these backbones."""
    torch.manual_seed(0)
    return build_backbone(name, "none")


@pytest.mark.parametrize("name", [*TORCHVISION, "efficientnet_lite0", "timm/resnet18", "timm/convnext_atto", "timm/test_vit"])
def test_blocks_cover_every_feature_parameter_once_stem_first(name):
    backbone = _random_init(name)
    block_of = {}
    for index, block in enumerate(backbone.blocks):
        for param in block.parameters():
            assert id(param) not in block_of, "a parameter is in two blocks"
            block_of[id(param)] = index
    order = [block_of[id(p)] for p in backbone.features.parameters()]  # KeyError = a parameter in no block
    assert len(order) == len(block_of)
    assert order[0] == 0 and order == sorted(order), "blocks must follow the network from the stem"
    assert len(backbone.blocks) == BLOCK_COUNTS.get(name.split("/")[-1], len(backbone.blocks))


@pytest.mark.parametrize("name", [*TORCHVISION, "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "timm/resnet18",
                                  "timm/convnext_atto"])
def test_features_are_pooled_to_num_features_at_64_pixels(name):
    backbone = _random_init(name)
    with torch.no_grad():
        out = backbone.features.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, backbone.num_features)
    assert len(backbone.mean) == len(backbone.std) == 3


#: The backbones whose blocks are a chain, so a frozen prefix's output can be cached: the bundled Lites and
#: every torchvision family the split knows (ResNet also stands for ResNeXt and Wide ResNet: one class).
CHAINED = [*TORCHVISION, "regnet_x_400mf", "mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize("name", CHAINED)
def test_running_the_blocks_in_turn_from_a_boundary_then_pooling_gives_the_features_exactly(name):
    backbone = _random_init(name)
    x = torch.randn(2, 3, 64, 64)
    assert backbone.chainable
    with torch.no_grad():
        expected = backbone.features.eval()(x)
        for k in (0, len(backbone.blocks) // 2, len(backbone.blocks) - 1):
            boundary = backbone.run_blocks(x, 0, k)
            assert torch.equal(backbone.pool(backbone.run_blocks(boundary, k)), expected), f"boundary after {k} blocks"


@pytest.mark.parametrize("name", ["timm/resnet18", "timm/convnext_atto", "timm/test_vit"])
def test_timm_blocks_are_parameter_groups_so_they_cannot_run_from_a_boundary(name):
    backbone = _random_init(name)
    assert not backbone.chainable
    with pytest.raises(ValueError, match="not a chain"):
        backbone.run_blocks(torch.randn(1, 3, 64, 64), 1)


@pytest.mark.parametrize("name, canonical", [
    ("resnet18", "torchvision/resnet18"),
    ("torchvision/resnet18", "torchvision/resnet18"),
    ("timm/resnet18", "timm/resnet18"),
    ("timm/efficientnet_lite0", "efficientnet_lite0"),
    ("efficientnet_lite2", "efficientnet_lite2"),
    ("convnext_atto", "timm/convnext_atto"),
])
def test_names_resolve_to_the_library_they_mean(name, canonical):
    assert build_backbone(name, "none").name == canonical


def test_unknown_name_is_rejected_with_close_suggestions():
    with pytest.raises(TuneTLError, match=r"unknown backbone 'resnet19'.*resnet18"):
        build_backbone("resnet19", "none")


def test_torchvision_family_without_a_block_map_points_to_timm():
    with pytest.raises(TuneTLError, match=r"vit_b_16.*timm/vit_b_16"):
        build_backbone("torchvision/vit_b_16", "none")


def test_features_state_dict_round_trips_through_a_file(tmp_path):
    source = build_backbone("resnet18", "none")
    torch.save(source.features.state_dict(), tmp_path / "resnet18.pt")
    loaded = build_backbone("resnet18", tmp_path / "resnet18.pt")
    assert all(torch.equal(v, source.features.state_dict()[k]) for k, v in loaded.features.state_dict().items())


def test_whole_classifier_state_dict_loads_without_its_head(tmp_path):
    classifier = torchvision.models.resnet18(num_classes=7)
    torch.save({"state_dict": classifier.state_dict()}, tmp_path / "full.pth")
    loaded = build_backbone("resnet18", str(tmp_path / "full.pth"))
    assert torch.equal(loaded.features.state_dict()["layer4.1.conv2.weight"], classifier.layer4[1].conv2.weight)


def test_in_memory_state_dict_reproduces_the_driver_backbone():
    driver = build_backbone("efficientnet_lite0", "imagenet")
    trial = build_backbone("efficientnet_lite0", driver.features.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(driver.features.eval()(x), trial.features.eval()(x))


def test_weights_of_the_wrong_shape_are_rejected_naming_the_file(tmp_path):
    state = build_backbone("resnet18", "none").features.state_dict()
    state["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(TuneTLError, match=r"bad\.pt.*wrong shape: conv1\.weight"):
        build_backbone("resnet18", tmp_path / "bad.pt")


def test_weights_of_another_architecture_are_rejected_listing_missing_keys(tmp_path):
    torch.save(build_backbone("resnet18", "none").features.state_dict(), tmp_path / "r18.pt")
    with pytest.raises(TuneTLError, match=r"r18\.pt.*missing: layer1\.2"):
        build_backbone("resnet34", tmp_path / "r18.pt")


def test_missing_weights_file_is_rejected_naming_the_path(tmp_path):
    with pytest.raises(TuneTLError, match=r"nowhere\.pt does not exist"):
        build_backbone("resnet18", tmp_path / "nowhere.pt")


def test_file_that_is_not_a_state_dict_is_rejected_naming_it(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(TuneTLError, match=r"notes\.pt is not a readable state dict"):
        build_backbone("resnet18", tmp_path / "notes.pt")


def test_uncached_torchvision_imagenet_weights_say_where_they_were_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(TuneTLError, match=rf"{expected}.*weights="):
        build_backbone("resnet18", "imagenet")


def test_cached_torchvision_imagenet_weights_load_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    cached = torchvision.models.resnet18()
    torch.save(cached.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    loaded = build_backbone("resnet18", "imagenet")
    assert torch.equal(loaded.features.state_dict()["conv1.weight"], cached.conv1.weight)


def test_uncached_timm_imagenet_weights_are_rejected_with_how_to_provide_them(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(TuneTLError, match=r"timm/resnet18 are not cached locally.*weights="):
        build_backbone("timm/resnet18", "imagenet")


def test_timm_imagenet_weights_come_from_the_local_hugging_face_cache(tmp_path, monkeypatch):
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    cached = timm.create_model("test_resnet")
    save_file(cached.state_dict(), repo / "snapshots" / ("0" * 40) / "model.safetensors")
    loaded = build_backbone("timm/test_resnet", "imagenet")
    assert torch.equal(loaded.features.state_dict()["layer4.0.conv2.weight"], cached.layer4[0].conv2.weight)
    assert isinstance(loaded.features.fc, nn.Identity)
