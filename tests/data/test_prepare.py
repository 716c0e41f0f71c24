"""Data is split once (seeded, stratified) and resized once per resolution, as uint8 arrays."""

import numpy as np

from tune_tl.data import load_source, prepare, stratified_split


def test_digits_load_offline_as_uint8_rgb_with_ten_classes():
    data = load_source("digits")
    assert data.images.shape == (1797, 3, 8, 8) and data.images.dtype == np.uint8
    assert data.images.max() == 255 and len(data.classes) == 10
    assert np.array_equal(data.images[:, 0], data.images[:, 2])  # grey replicated


def test_split_is_stratified_and_the_same_for_the_same_seed():
    labels = np.repeat(np.arange(4), 25)
    a = stratified_split(labels, 0.2, seed=3)
    b = stratified_split(labels, 0.2, seed=3)
    c = stratified_split(labels, 0.2, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=False))
    assert not np.array_equal(a[1], c[1])
    assert np.bincount(labels[a[1]]).tolist() == [5, 5, 5, 5]
    assert set(a[0]).isdisjoint(a[1]) and len(a[0]) + len(a[1]) == 100


def test_prepare_resizes_every_allowed_resolution_with_the_same_split():
    data = prepare(load_source("digits"), [32, 48], val_fraction=0.2, seed=0)
    assert sorted(data.splits) == [32, 48] and data.num_classes == 10
    s32, s48 = data.splits[32], data.splits[48]
    assert s32.train_x.shape[1:] == (3, 32, 32) and s48.val_x.shape[1:] == (3, 48, 48)
    assert s32.train_x.dtype == np.uint8
    assert np.array_equal(s32.val_y, s48.val_y) and len(s32.val_y) == 360
    # Upscaling keeps the image: a dark corner stays dark, the centre of a digit stays bright.
    assert s32.train_x[:, :, :2, :2].mean() < 10 and s32.train_x[:, :, 12:20, 12:20].mean() > 60
