"""A frozen prefix's activations, cached in memory at the freeze boundary, train to the same model as running every block."""

import dataclasses
import io
import logging

import pytest
import torch
from torch import nn
from toy_models import toy_backbone

from tune_tl.config.params import TrialConfig
from tune_tl.data.digits import load_digits_images
from tune_tl.data.prepare import prepare
from tune_tl.data.types import LabelledImages
from tune_tl.models import Backbone, FreezePolicy, build_backbone
from tune_tl.training.batches import FROZEN_DTYPE_ENV
from tune_tl.training.context import TrialContext
from tune_tl.training.frozen_features import cached_prefix_blocks
from tune_tl.training.loop import fit
from tune_tl.training.recipe import augment_config, build_trial, freeze_policy, regularise_config

RESOLUTION = 32


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """Real Lite0 ImageNet weights and 80 digits at 32 px (60 train, 20 val); the feature cache on.

    One torch thread, a 1-CPU trial's share: these small convolutions gain nothing from more, and on a
    busy machine two threads that wait for each other are many times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    digits = load_digits_images()
    data = prepare(LabelledImages(digits.images[:80], digits.labels[:80], digits.classes), [RESOLUTION], 0.25, 0)
    state = build_backbone("efficientnet_lite0").features.state_dict()
    yield TrialContext("efficientnet_lite0", state, data, max_epochs=2, seed=0, feature_cache=str(tmp_path_factory.mktemp("cache")))
    torch.set_num_threads(threads)


def train(context, params: dict, cache: bool = True, resume=None, on_state=None, **fit_overrides):
    # SGD at a small rate: the cached activations were computed in batches of another size, which can change
    # the last bits of a convolution's output (~1e-6), and on 60 images AdamW (dividing by each gradient's
    # running RMS) and BatchNorm over 15 values per channel amplify such bits into 1e-4 of the loss.
    config = TrialConfig.from_dict({"resolution": RESOLUTION, "batch_size": 16, "optimizer": "sgd", "lr": 0.003, **params})
    plan = build_trial(config, context if cache else dataclasses.replace(context, feature_cache=None), "cpu")
    history = fit(plan.model, plan.split, dataclasses.replace(plan.fit, **fit_overrides), param_groups=plan.param_groups,
                  resume=resume, on_state=on_state)
    return history, plan.model


def assert_same_training(a, b):
    assert [m.val_acc for m in a] == pytest.approx([m.val_acc for m in b], abs=1e-9)
    assert [m.train_loss for m in a] == pytest.approx([m.train_loss for m in b], rel=1e-5)
    assert [m.val_loss for m in a] == pytest.approx([m.val_loss for m in b], rel=1e-5)


@pytest.mark.parametrize("params, cached_blocks", [
    ({"freeze_blocks": 8, "head": "mlp"}, [8, 8]),  # n - 1: only the head conv block trains; the MLP head's dropout draws as before
    ({"freeze_policy": "surgical", "train_block": 6}, [6, 6]),  # the blocks after the trained one are frozen but still run
    ({"freeze_blocks": 5, "lp_epochs": 1}, [9, 5]),  # LP→FT: pooled features while probing, then the boundary
])
def test_a_boundary_cached_trial_matches_its_uncached_twin(context, params, cached_blocks, monkeypatch):
    monkeypatch.setenv(FROZEN_DTYPE_ENV, "float32")  # LP→FT's pooled features as the uncached run computes them
    plain, plain_model = train(context, params, cache=False)
    cached, cached_model = train(context, params)
    assert [m.cached_blocks for m in cached] == cached_blocks
    assert [m.cached_features for m in cached] == [k == 9 for k in cached_blocks]
    assert [m.cached_blocks for m in plain] == [0, 0]
    assert_same_training(plain, cached)
    plain_state, cached_state = plain_model.state_dict(), cached_model.state_dict()
    for name, tensor in plain_state.items():  # BatchNorm statistics of the trainable blocks included
        torch.testing.assert_close(cached_state[name], tensor, rtol=1e-3, atol=1e-5, msg=name)


def test_augmentation_keeps_a_frozen_prefix_running_every_epoch(context, caplog):
    params = {"freeze_blocks": 8, "aug_flip": 1}
    with caplog.at_level(logging.INFO, logger="tune_tl.training.frozen_features"):
        history, _ = train(context, params)
    assert [m.cached_blocks for m in history] == [0, 0]
    assert "inputs change every epoch (aug_flip)" in caplog.text


def test_activations_over_the_memory_cap_fall_back_to_running_every_block_and_say_so_once(context, caplog):
    params = {"freeze_blocks": 8}  # 320 floats per image: 100 KB for the 80 images
    with caplog.at_level(logging.INFO, logger="tune_tl.training.epoch_inputs"):
        capped, _ = train(context, params, boundary_cache_bytes=50_000)
    assert [m.cached_blocks for m in capped] == [0, 0]
    assert caplog.text.count("boundary cache off for this trial") == 1
    assert "takes 0.10 MB for 80 images, over its 0.05 MB cap" in caplog.text
    plain, _ = train(context, params, cache=False)
    assert_same_training(plain, capped)


def roundtrip(state):
    """What a checkpoint goes through: torch.save, then a weights-only load."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_a_boundary_cached_trial_resumed_from_its_checkpoint_continues_identically(context):
    params = {"freeze_blocks": 6, "head": "mlp"}
    states = []
    full, full_model = train(context, params, on_state=lambda m, s: states.append(roundtrip(s)))
    torch.manual_seed(123)  # the retried worker starts with other RNG states; the checkpoint restores them
    resumed, resumed_model = train(context, params, resume=states[0])
    assert [m.cached_blocks for m in resumed] == [6, 6]
    assert resumed[1] == dataclasses.replace(full[1], epoch_seconds=resumed[1].epoch_seconds)
    for name, tensor in full_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name


def chain(backbone: Backbone) -> Backbone:
    """The toy backbone with its blocks declared a chain (its features are blocks, pooling, flatten)."""
    return dataclasses.replace(backbone, pool=nn.Sequential(*list(backbone.features)[len(backbone.blocks):]))


@pytest.mark.parametrize("params, chained, unchained", [
    ({"freeze_blocks": 2}, 2, 0),  # a prefix: only where the blocks can run one after the other
    ({"freeze_policy": "surgical", "train_block": 1}, 1, 0),
    ({"freeze_policy": "head_only"}, 3, 3),  # the whole backbone: pooled features, any backbone
    ({"freeze_blocks": 3}, 3, 3),
    ({"freeze_policy": "full"}, 0, 0),
    ({"freeze_blocks": 0}, 0, 0),
    ({"freeze_blocks": 2, "mixup_alpha": 0.2}, 0, 0),  # inputs that change every epoch
    ({"freeze_policy": "head_only", "auto_augment": "randaugment"}, 0, 0),
])
def test_which_blocks_a_trial_serves_from_a_cache_follows_from_its_config(params, chained, unchained):
    cfg = TrialConfig.from_dict(params)
    for backbone, expected in ((chain(toy_backbone()), chained), (toy_backbone(), unchained)):
        assert cached_prefix_blocks(freeze_policy(cfg), backbone, augment_config(cfg), regularise_config(cfg)) == expected


def test_the_probe_epochs_of_lp_ft_serve_the_whole_backbone_from_the_cache():
    cfg = TrialConfig.from_dict({"freeze_policy": "full", "lp_epochs": 2})
    assert cached_prefix_blocks(freeze_policy(cfg), toy_backbone(), augment_config(cfg), regularise_config(cfg), probing=True) == 3
    assert FreezePolicy("surgical", train_block=2).frozen_prefix(3) == 2
