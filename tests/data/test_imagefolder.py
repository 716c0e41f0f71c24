"""Image folders: both layouts, every common format and colour mode, decoded once per resolution."""

import numpy as np
import pytest
from PIL import Image

from tests.data.images import image, write_class_tree, write_split_folder
from tune_tl.data import FileSplit, Split
from tune_tl.data.imagefolder import decode, load_imagefolder


def load(root, resolutions=(32,), budget_mb=4096.0, skip=False, val_fraction=0.25):
    return load_imagefolder(root, list(resolutions), val_fraction, 0, budget_mb, skip)


def test_train_val_test_layout_keeps_the_given_split_and_labels_follow_sorted_class_names(tmp_path):
    root = write_split_folder(tmp_path / "pets", classes=("dog", "cat", "bird"), train=4, val=2, test=1)
    loaded = load(root, resolutions=(32, 48))
    assert loaded.data.classes == ["bird", "cat", "dog"]
    s32, s48 = loaded.data.splits[32], loaded.data.splits[48]
    assert isinstance(s32, Split) and not loaded.data.streaming
    assert s32.train_x.shape == (12, 3, 32, 32) and s48.val_x.shape == (6, 3, 48, 48) and s32.test_x.shape == (3, 3, 32, 32)
    assert s32.train_x.dtype == np.uint8
    assert np.bincount(s32.val_y).tolist() == [2, 2, 2] and np.array_equal(s32.val_y, s48.val_y)
    # Pixels are the images' own colours: bird (label 0) images were written with colour index 2 (blue).
    assert s32.train_x[s32.train_y == 0].mean(axis=(0, 2, 3)).argmax() == 2
    assert "train/ and val/ and test/" in loaded.description and "in memory" in loaded.description


def test_a_single_class_tree_is_split_stratified_and_the_same_for_the_same_seed(tmp_path):
    root = write_class_tree(tmp_path / "tree", per_class=8)
    a, b = load(root), load(root)
    sa, sb = a.data.splits[32], b.data.splits[32]
    assert np.bincount(sa.val_y).tolist() == [2, 2, 2] and len(sa.train_y) == 18
    assert np.array_equal(sa.val_x, sb.val_x) and sa.test_x is None
    c = load_imagefolder(root, [32], 0.25, 1, 4096.0, False).data.splits[32]
    assert not np.array_equal(sa.val_x, c.val_x), "another seed gives another split"


def test_a_train_folder_without_val_is_split_by_the_fraction(tmp_path):
    write_class_tree(tmp_path / "root" / "train", per_class=8)
    loaded = load(tmp_path / "root")
    assert len(loaded.data.splits[32].val_y) == 6 and "train/ split by data.val_fraction" in loaded.description


def _mode_images():
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # fully transparent → white, not black
    palette = image(0).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    return {
        "grey.png": (Image.new("L", (20, 20), 128), (128, 128, 128)),
        "palette.png": (palette, (220, 30, 30)),
        "palette.gif": (palette, (220, 30, 30)),
        "transparent.png": (rgba, (255, 255, 255)),
        "cmyk.jpg": (Image.new("CMYK", (20, 20), (0, 255, 255, 0)), (255, 0, 0)),
        "rgb.jpg": (Image.new("RGB", (20, 20), (30, 200, 40)), (30, 200, 40)),
        "rgb.bmp": (Image.new("RGB", (20, 20), (40, 60, 230)), (40, 60, 230)),
        "rgb.webp": (Image.new("RGB", (20, 20), (230, 220, 40)), (230, 220, 40)),
        "grey_alpha.png": (Image.new("LA", (20, 20), (50, 255)), (50, 50, 50)),
    }


@pytest.mark.parametrize("name", sorted(_mode_images()))
def test_common_formats_and_colour_modes_become_rgb(tmp_path, name):
    img, expected = _mode_images()[name]
    path = tmp_path / name
    img.save(path, **({"lossless": True} if name.endswith(".webp") else {}))
    (out,) = decode(str(path), (32,))
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    assert np.abs(out.reshape(3, -1).mean(axis=1) - expected).max() < 24, out.reshape(3, -1).mean(axis=1)


def test_resizing_keeps_the_aspect_ratio_with_a_centre_crop(tmp_path):
    wide = np.zeros((30, 90, 3), dtype=np.uint8)
    wide[:, :30] = (255, 0, 0)
    wide[:, 30:60] = (0, 255, 0)
    wide[:, 60:] = (0, 0, 255)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    (out,) = decode(str(tmp_path / "wide.png"), (32,))
    assert out[1].mean() > 250 and out[0].mean() < 5 and out[2].mean() < 5  # only the green middle is kept


def test_data_over_the_memory_budget_is_streamed_from_the_same_split(tmp_path):
    root = write_class_tree(tmp_path / "tree", per_class=8)
    memory, streamed = load(root), load(root, budget_mb=0.01)
    split = streamed.data.splits[32]
    assert isinstance(split, FileSplit) and streamed.data.streaming
    assert "streaming from files" in streamed.description and "data.memory_budget_mb 0.01" in streamed.description
    assert np.array_equal(split.val_y, memory.data.splits[32].val_y)
    decoded = np.stack([decode(f, (32,))[0] for f in split.val_files])
    assert np.array_equal(decoded, memory.data.splits[32].val_x), "streaming sees the same pixels"
