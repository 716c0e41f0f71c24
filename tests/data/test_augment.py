"""Augmentation: per-image random draws on batched tensors, seeded, each switch doing only its job."""

import pytest
import torch

from tune_tl.data.augment import Augment, AugmentConfig


def batch(n=16, size=32):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float()


def test_all_switches_off_returns_the_batch_unchanged():
    x = batch()
    assert torch.equal(Augment(AugmentConfig())(x), x)


def test_every_augmentation_keeps_shape_dtype_and_pixel_range():
    x = batch()
    out = Augment(AugmentConfig(crop_scale=0.3, flip=True, rotate=15, jitter=0.4), seed=1)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 255


def test_the_same_seed_gives_the_same_augmented_batches_and_another_seed_does_not():
    cfg = AugmentConfig(crop_scale=0.5, flip=True, rotate=10, jitter=0.2)
    a, b, c = Augment(cfg, seed=3), Augment(cfg, seed=3), Augment(cfg, seed=4)
    x = batch()
    for _ in range(2):  # the stream continues identically across batches
        assert torch.equal(a(x), b(x))
    assert not torch.equal(Augment(cfg, seed=3)(x), c(x))


def test_flip_mirrors_some_images_exactly_and_leaves_the_others():
    x = batch(n=32)
    out = Augment(AugmentConfig(flip=True), seed=0)(x)
    mirrored = [torch.allclose(o, xi.flip(-1), atol=1e-3) for o, xi in zip(out, x, strict=False)]
    kept = [torch.allclose(o, xi, atol=1e-3) for o, xi in zip(out, x, strict=False)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=False))
    assert 5 < sum(mirrored) < 27, "each image is drawn independently, about half are flipped"


def test_random_resized_crop_zooms_in_on_a_different_region_per_image():
    x = torch.zeros(8, 3, 32, 32)
    x[:, :, :, :16] = 255  # left half white
    out = Augment(AugmentConfig(crop_scale=0.1), seed=0)(x)
    white = out.mean(dim=(1, 2, 3)) / 255
    assert white.std() > 0.1, "crops land on different parts of the image"


def test_jitter_changes_brightness_and_contrast_per_image_only():
    x = torch.full((8, 3, 4, 4), 100.0)
    out = Augment(AugmentConfig(jitter=0.5), seed=0)(x)
    means = out.mean(dim=(1, 2, 3))
    assert means.min() >= 50 - 1e-4 and means.max() <= 150 + 1e-4 and means.std() > 5
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out)), "a flat image stays flat"


def test_augmentation_runs_on_the_device_of_the_batch():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Augment(AugmentConfig(crop_scale=0.5, rotate=5), seed=0)(batch().to(device))
    assert out.device.type == device


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment"])
def test_auto_augment_changes_pixels_and_keeps_shape_and_dtype(name):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = Augment(AugmentConfig(auto_augment=name)).policy(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert not torch.equal(out, x)
    assert sum(not torch.equal(a, b) for a, b in zip(out, x, strict=False)) >= 8  # drawn per image, not once per batch
    assert AugmentConfig(auto_augment=name).active


def test_no_auto_augment_returns_the_batch_itself():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert Augment(AugmentConfig()).policy(x) is x
