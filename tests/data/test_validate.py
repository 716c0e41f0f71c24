"""Every kind of bad input stops the search before Ray with one message naming the file or folder."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.data.images import write_class_tree, write_split_folder
from tune_tl.data.imagefolder import load_imagefolder
from tune_tl.data.validate import write_skipped
from tune_tl.errors import TuneTLError


def load(root, skip=False):
    return load_imagefolder(root, [32], 0.25, 0, 4096.0, skip)


def error_for(root) -> str:
    with pytest.raises(TuneTLError) as err:
        load(root)
    return str(err.value)


@pytest.fixture
def tree(tmp_path):
    return write_class_tree(tmp_path / "tree", per_class=6)


def test_a_corrupt_image_is_named(tree):
    bad = tree / "a" / "corrupt.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(bad)
    data = bytearray(bad.read_bytes())
    data[200:400] = bytes(200)  # a valid header, garbage pixels
    bad.write_bytes(data)
    msg = error_for(tree)
    assert f"{bad}: is corrupt or truncated (broken data stream" in msg
    assert msg.endswith("fix or remove it, or pass --skip-bad-images to leave bad files out")


def test_a_truncated_image_is_named(tree):
    bad = tree / "b" / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(bad, quality=95)
    bad.write_bytes(bad.read_bytes()[:600])
    assert f"{bad}: is corrupt or truncated" in error_for(tree)


def test_a_file_that_is_not_an_image_is_named(tree):
    bad = tree / "c" / "notes.txt"
    bad.write_text("these are not pixels\n")
    assert f"{bad}: is not an image file Pillow can read" in error_for(tree)


def test_a_zero_byte_file_is_named(tree):
    bad = tree / "a" / "empty.png"
    bad.touch()
    assert f"{bad}: is empty (0 bytes)" in error_for(tree)


def test_an_unreadable_file_is_named(tree):
    bad = tree / "a" / "gone.png"
    bad.symlink_to(tree / "nowhere.png")  # a dangling link: listed, but cannot be opened
    assert f"{bad}: cannot be read (No such file or directory)" in error_for(tree)


def test_a_missing_or_non_folder_data_path_is_named(tmp_path):
    assert f"data.path {tmp_path / 'missing'} does not exist" in error_for(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    assert f"data.path {tmp_path / 'file.png'} is not a folder" in error_for(tmp_path / "file.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any folder")
def test_an_unreadable_class_folder_is_named(tree):
    os.chmod(tree / "b", 0)
    try:
        assert f"class folder {tree / 'b'} cannot be read" in error_for(tree)
    finally:
        os.chmod(tree / "b", 0o755)


def test_an_empty_class_folder_is_named(tree):
    (tree / "d").mkdir()
    assert f"class folder {tree / 'd'} is empty" in error_for(tree)


def test_a_single_class_is_refused(tmp_path):
    root = write_class_tree(tmp_path / "one", classes=("only",))
    assert "found only 'only'; an image folder needs at least 2 class folders" in error_for(root)


def test_a_class_missing_from_val_is_named(tmp_path):
    root = write_split_folder(tmp_path / "split")
    shutil.rmtree(root / "val" / "b")
    msg = error_for(root)
    assert f"class folder {root / 'val' / 'b'} is missing, but {root / 'train' / 'b'} exists" in msg


def test_a_val_class_without_training_images_is_named(tmp_path):
    root = write_split_folder(tmp_path / "split")
    write_class_tree(root / "val", classes=("zebra",), per_class=2)
    assert f"class folder {root / 'val' / 'zebra'} has no counterpart in {root / 'train'}" in error_for(root)


def test_a_val_folder_without_train_is_named(tmp_path):
    write_class_tree(tmp_path / "root" / "val")
    assert "has a val/ folder but no train/ folder" in error_for(tmp_path / "root")


def test_skipping_bad_images_leaves_them_out_and_lists_them(tree, tmp_path):
    (tree / "a" / "empty.png").touch()
    (tree / "b" / "notes.txt").write_text("hi")
    loaded = load(tree, skip=True)
    assert sorted(b.path for b in loaded.skipped) == [str(tree / "a" / "empty.png"), str(tree / "b" / "notes.txt")]
    split = loaded.data.splits[32]
    assert len(split.train_y) + len(split.val_y) == 18  # the good images, all of them
    write_skipped(loaded.skipped, tmp_path / "skipped_images.txt")
    lines = (tmp_path / "skipped_images.txt").read_text().splitlines()
    assert lines == [f"{tree / 'a' / 'empty.png'}: is empty (0 bytes)",
                     f"{tree / 'b' / 'notes.txt'}: is not an image file Pillow can read (supported: JPEG, PNG, BMP, WebP, GIF, TIFF)"]


def test_a_class_left_empty_by_skipping_is_an_error(tmp_path):
    root = write_class_tree(tmp_path / "tree", per_class=6)
    write_class_tree(root, classes=("z",), per_class=0)
    (root / "z" / "junk.txt").write_text("no images here")
    with pytest.raises(TuneTLError, match=f"class folder {root / 'z'} has no usable images left after skipping"):
        load(root, skip=True)


def test_too_few_images_for_a_stratified_split_is_a_clear_error(tmp_path):
    root = write_class_tree(tmp_path / "tree", per_class=1)
    with pytest.raises(TuneTLError, match="data.val_fraction: cannot split 3 images stratified by class"):
        load(root)
