"""The training loop's strategies: LP→FT phases, per-depth learning rates, and the frozen-feature cache."""

import numpy as np
import pytest
import torch
from toy_models import toy_model

from tune_tl.data.types import Split
from tune_tl.models import FreezePolicy, param_groups
from tune_tl.training.feature_cache import FeatureCache
from tune_tl.training.loop import FitConfig, fit


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 120)
    images = rng.integers(0, 60, (120, 3, 16, 16)).astype(np.uint8)
    images[:, labels % 3, :8] += 150  # a learnable signal per class
    return Split(images[:90], labels[:90], images[90:], labels[90:])


def config(**kw):
    return FitConfig(**{"epochs": 3, "batch_size": 16, "lr": 0.01, "mean": (0.5,) * 3, "std": (0.5,) * 3, "seed": 3, **kw})


def test_lp_then_ft_trains_the_head_first_and_records_the_phase_per_epoch(split):
    model = toy_model(num_classes=4)
    model.apply_policy(FreezePolicy("full"))
    before = {k: v.clone() for k, v in model.features.state_dict().items()}
    snapshots = []
    history = fit(model, split, config(lp_epochs=2), lambda m: snapshots.append(model.features.state_dict()["1.0.weight"].clone()))
    assert [m.phase for m in history] == ["probe", "probe", "finetune"]
    assert [m.epoch for m in history] == [1, 2, 3]  # epochs count across both phases
    head_params = sum(p.numel() for p in model.head.parameters())
    assert [m.trainable_params for m in history][:2] == [head_params, head_params]
    assert history[2].trainable_params > head_params
    assert torch.equal(snapshots[1], before["1.0.weight"])  # backbone untouched during the probe
    assert not torch.equal(snapshots[2], before["1.0.weight"])  # and trained afterwards


def test_without_lp_every_epoch_is_finetune(split):
    history = fit(toy_model(num_classes=4), split, config(epochs=2))
    assert [m.phase for m in history] == ["finetune", "finetune"]


def test_layer_decay_moves_early_blocks_less(split):
    def change(decay):
        model = toy_model(num_classes=4)
        model.apply_policy(FreezePolicy("full", bn_train=False))
        w0 = model.backbone.blocks[0][0].weight.detach().clone()
        fit(model, split, config(epochs=1), None, param_groups(model, 1.0, decay))
        return (model.backbone.blocks[0][0].weight.detach() - w0).abs().mean().item()

    assert change(0.1) < 0.1 * change(1.0)


@pytest.mark.parametrize("policy, lp", [(FreezePolicy("head_only"), 0), (FreezePolicy("full"), 2)])
def test_cached_features_give_the_same_metrics_as_running_the_backbone(split, tmp_path, policy, lp):
    def run(cache):
        model = toy_model(num_classes=4, head="mlp")  # the mlp head has dropout: RNG use must match too
        model.apply_policy(policy)
        return fit(model, split, config(lp_epochs=lp, feature_cache=cache))

    plain = run(None)
    cached = run(str(tmp_path / "cache"))
    again = run(str(tmp_path / "cache"))  # second trial: served from disk
    frozen_epochs = 3 if lp == 0 else lp
    assert [m.cached_features for m in cached] == [True] * frozen_epochs + [False] * (3 - frozen_epochs)
    assert not any(m.cached_features for m in plain)
    for a, b, c in zip(plain, cached, again, strict=False):
        assert a.val_acc == b.val_acc == c.val_acc
        # The cached features come from a pass with batch norm folded into the convolutions (models.folding): the same
        # function, summed in another order (about 1e-6 of each feature); an epoch that trains on them moves by as little.
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4, abs=1e-6)
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-4, abs=1e-6)
        assert b.train_loss == c.train_loss and b.val_loss == c.val_loss
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def test_different_weights_never_hit_another_backbones_cache_entry(split, tmp_path):
    cache = str(tmp_path / "cache")
    for seed in (0, 1):
        model = toy_model(seed=seed, num_classes=4)
        model.apply_policy(FreezePolicy("head_only"))
        fit(model, split, config(epochs=1, feature_cache=cache))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_a_corrupt_cache_entry_is_recomputed_not_served(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"train": np.ones((3, 2)), "val": np.zeros((2, 2))}

    rows = {"train": 3, "val": 2}
    cache.load_or_compute("k1", compute, rows)
    (tmp_path / "k1.npz").write_bytes(b"garbage")
    arrays = cache.load_or_compute("k1", compute, rows)
    assert len(calls) == 2 and arrays["train"].shape == (3, 2)
    cache.load_or_compute("k1", compute, rows)
    assert len(calls) == 2 and cache.hits == 1
    assert cache.load_or_compute("k1", compute, {"train": 4, "val": 2})["train"].shape == (3, 2)  # wrong rows: recomputed
    assert len(calls) == 3
