"""Forward once: a probe's pass keeps the freeze-boundary activations, and a fine-tune trains from them from its first epoch."""

import dataclasses
import logging

import numpy as np
import pytest
import torch

from tune_tl.config.params import TrialConfig
from tune_tl.data.digits import load_digits_images
from tune_tl.data.prepare import prepare
from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import LabelledImages
from tune_tl.models import build_backbone
from tune_tl.training import loop
from tune_tl.training.batches import FROZEN_DTYPE_ENV, epoch_batches
from tune_tl.training.context import TrialContext
from tune_tl.training.cost_model import build_cost_model, with_probed_boundaries
from tune_tl.training.feature_cache import FeatureCache
from tune_tl.training.forward_once import boundary_cuts, boundary_key, forward_once, probe_boundary
from tune_tl.training.frozen_features import pooled_features
from tune_tl.training.linear_probe import measure_probe
from tune_tl.training.loop import first_epoch_subset, fit
from tune_tl.training.recipe import build_trial

RESOLUTION = 32
NAME = "efficientnet_lite0"


@pytest.fixture(scope="module")
def data():
    """80 digits at 32 px (60 train, 20 val)."""
    digits = load_digits_images()
    return prepare(LabelledImages(digits.images[:80], digits.labels[:80], digits.classes), [RESOLUTION], 0.25, 0)


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(NAME)


def normaliser(backbone):
    return Normaliser(backbone.mean, backbone.std, torch.device("cpu"))


def test_the_kept_boundaries_are_the_top_ones_within_the_byte_budget(backbone, data):
    split = data.splits[RESOLUTION]
    assert boundary_cuts(backbone, split) == (8, 7, 6, 5, 4, 3, 2, 1)  # 80 images at 32 px: everything fits
    one_image = 2 * 320  # float16 bytes of block 8's output at 32 px (320 channels, 1x1), per image
    assert boundary_cuts(backbone, split, budget=one_image * 80) == (8,)
    assert boundary_cuts(backbone, split, budget=one_image * 80 - 1) == ()


def test_the_probe_pass_gives_the_same_pooled_features_and_keeps_each_boundary(backbone, data, tmp_path, monkeypatch):
    monkeypatch.setenv(FROZEN_DTYPE_ENV, "float32")
    split = data.splits[RESOLUTION]
    cache = str(tmp_path / "cache")
    pooled = forward_once(backbone, split, normaliser(backbone), 32, cache, cuts=(8, 5))
    plain = pooled_features(NAME, backbone.features, split, normaliser(backbone), 32, None)
    np.testing.assert_allclose(pooled["train"], plain["train"], rtol=1e-5, atol=1e-6)
    for cut in (8, 5):
        train, val = probe_boundary(backbone, cut, split, normaliser(backbone), cache)
        backbone.features.eval()
        with torch.no_grad():
            expected = backbone.run_blocks(normaliser(backbone)(torch.tensor(split.val_x)), 0, cut)
        assert train.dtype == torch.float32 and len(train) == len(split.train_y)
        torch.testing.assert_close(val, expected, rtol=1e-2, atol=2e-3)  # stored as float16
    assert probe_boundary(backbone, 7, split, normaliser(backbone), cache) is None  # not kept: the trial computes its own
    assert FeatureCache(cache).has(boundary_key(backbone, 5, split, normaliser(backbone)), {"train": 60, "val": 20})


@pytest.mark.parametrize("entry", ["pooled", "boundary"])
def test_a_bfloat16_pass_is_within_its_precision_of_float32_and_never_read_as_float32(backbone, data, tmp_path, monkeypatch, entry):
    split, cache, normalise = data.splits[RESOLUTION], str(tmp_path / "cache"), normaliser(backbone)
    monkeypatch.setenv(FROZEN_DTYPE_ENV, "bfloat16")
    fast = forward_once(backbone, split, normalise, 32, cache, cuts=(5,))
    fast_boundary = probe_boundary(backbone, 5, split, normalise, cache)[1]
    monkeypatch.setenv(FROZEN_DTYPE_ENV, "float32")
    assert probe_boundary(backbone, 5, split, normalise, cache) is None, "a float32 pass does not read bfloat16's entry"
    exact = forward_once(backbone, split, normalise, 32, cache, cuts=(5,))
    exact_boundary = probe_boundary(backbone, 5, split, normalise, cache)[1]
    got, expected = (torch.as_tensor(fast["val"]), torch.as_tensor(exact["val"])) if entry == "pooled" else (fast_boundary, exact_boundary)
    # bfloat16 keeps 8 bits of mantissa: relative error 3-5 % here (digits at 32 px), 2 % for Lite0's pooled features at 224 px
    assert float((got - expected).norm() / expected.norm()) < 0.08
    assert not torch.equal(got, expected)


def test_a_second_probe_pass_reads_the_cache_instead_of_running_the_backbone(backbone, data, tmp_path, monkeypatch):
    split = data.splits[RESOLUTION]
    cache = str(tmp_path / "cache")
    first = forward_once(backbone, split, normaliser(backbone), 32, cache, cuts=(8,))
    monkeypatch.setattr(backbone.features, "forward", lambda x: pytest.fail("the backbone ran again"))
    monkeypatch.setattr(backbone, "run_blocks", lambda *a: pytest.fail("the blocks ran again"))
    again = forward_once(backbone, split, normaliser(backbone), 32, cache, cuts=(8,))
    np.testing.assert_array_equal(first["val"], again["val"])


def train(data, cache, params):
    state = build_backbone(NAME).features.state_dict()
    context = TrialContext(NAME, state, data, max_epochs=2, seed=0, feature_cache=cache)
    config = TrialConfig.from_dict({"resolution": RESOLUTION, "batch_size": 16, "optimizer": "sgd", "lr": 0.003, **params})
    plan = build_trial(config, context, "cpu")
    return fit(plan.model, plan.split, dataclasses.replace(plan.fit), param_groups=plan.param_groups)


def test_a_fine_tune_after_the_probe_starts_from_its_activations_and_matches_its_twin(data, tmp_path, caplog):
    """The twin computes its own boundary (float32); the fine-tune reads the probe's (float16): the same training, to float16's bits."""
    params = {"freeze_blocks": 7, "head": "linear"}
    twin = train(data, str(tmp_path / "twin"), params)
    shared = str(tmp_path / "shared")
    measure_probe(build_backbone(NAME), data.splits[RESOLUTION], data.num_classes, 0, shared)
    with caplog.at_level(logging.INFO, logger="tune_tl.training.epoch_inputs"):
        after_probe = train(data, shared, params)
    assert "comes from the probe's pass" in caplog.text
    assert [m.cached_blocks for m in after_probe] == [m.cached_blocks for m in twin] == [7, 7]
    assert [m.val_loss for m in after_probe] == pytest.approx([m.val_loss for m in twin], rel=1e-2)
    assert [m.val_acc for m in after_probe] == pytest.approx([m.val_acc for m in twin], abs=0.051)  # at most one of 20 images


def test_the_cost_model_charges_no_fill_for_a_boundary_the_probe_kept(backbone, data):
    cold = build_cost_model({NAME: backbone}, data)
    probed = with_probed_boundaries(cold, {NAME: backbone}, data, [(NAME, RESOLUTION)])
    assert probed.probed_boundaries == {NAME: {RESOLUTION: boundary_cuts(backbone, data.splits[RESOLUTION])}}
    prefix = TrialConfig.from_dict({"backbone": NAME, "resolution": RESOLUTION, "freeze_policy": "prefix", "freeze_blocks": 7})
    assert cold.epoch_cost(prefix, 1) > cold.epoch_cost(prefix, 2)  # the first epoch fills the boundary cache
    assert probed.epoch_cost(prefix, 1) == probed.epoch_cost(prefix, 2) == cold.epoch_cost(prefix, 2)
    whole = TrialConfig.from_dict({"backbone": NAME, "resolution": RESOLUTION, "freeze_policy": "full"})
    assert probed.epoch_cost(whole, 1) == cold.epoch_cost(whole, 1)
    assert type(probed).from_dict(probed.to_dict()) == probed  # scheduler.json keeps it


def test_a_subset_first_epoch_trains_on_a_stratified_share_then_on_everything(data, tmp_path, monkeypatch):
    labels = data.splits[RESOLUTION].train_y
    subset = first_epoch_subset(labels, 0.5, seed=0)
    assert np.array_equal(subset, first_epoch_subset(labels, 0.5, seed=0)), "the same subset for every trial of a seed"
    for c in np.unique(labels):
        assert len(np.flatnonzero(labels[subset] == c)) == max(1, round(0.5 * np.sum(labels == c)))
    assert np.array_equal(first_epoch_subset(labels, 1.0, seed=0), np.arange(len(labels)))
    seen = []  # images each epoch's batches hold, as fit draws them
    monkeypatch.setattr(loop, "epoch_batches", lambda order, size: seen.append(len(order)) or epoch_batches(order, size))
    full = train(data, None, {"freeze_blocks": 8})
    half = train(data, None, {"freeze_blocks": 8, "first_epoch_fraction": 0.5})
    assert seen == [60, 60, 60] + [60, len(subset), 60]  # per fit: the schedule's epoch length, then each epoch
    assert half[0].train_loss != full[0].train_loss
    assert all(np.isfinite(m.val_acc) for m in half) and len(half) == 2


def test_the_cost_model_prices_a_subset_first_epoch_at_its_share(backbone, data):
    model = build_cost_model({NAME: backbone}, data, feature_cache=False)
    base = {"backbone": NAME, "resolution": RESOLUTION, "freeze_policy": "full"}
    whole, half = TrialConfig.from_dict(base), TrialConfig.from_dict({**base, "first_epoch_fraction": 0.5})
    assert model.epoch_cost(half, 1) < model.epoch_cost(whole, 1)
    assert model.epoch_cost(half, 2) == model.epoch_cost(whole, 2)


def test_the_frozen_passes_run_no_batch_norm_of_the_backbone_they_read(backbone, data, tmp_path):
    """Each batch norm is folded into its convolution in a copy (``models.folding``): the backbone's own batch norms run
    only on the two images that check the copy, once per pass."""
    split = data.splits[RESOLUTION]
    norms = [m for m in backbone.features.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, x, _y: seen.append(len(x[0]))) for m in norms]
    try:
        forward_once(backbone, split, normaliser(backbone), 32, str(tmp_path / "cache"), cuts=(8, 5))
        pooled_features(NAME, backbone.features, split, normaliser(backbone), 32, None)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen and set(seen) == {2}, "only the check's two images went through an unfolded batch norm"
    assert len(seen) == 4 * len(norms), "one check per pass over a part: forward once's train and val, the pooled features' too"
