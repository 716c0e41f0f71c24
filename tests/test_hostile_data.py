"""Hostile and awkward data, one row per case: a data folder is data, never code, and real photos are read right.

| case                                             | what must happen                                                        |
|--------------------------------------------------|-------------------------------------------------------------------------|
| crafted CIFAR batch (``source: cifar10``)        | exit 2 naming the file; the payload never runs; nothing under --output   |
| image folder holding only CIFAR batch files      | exit 2 saying to set ``data.source: cifar10``; nothing unpickled         |
| class folders plus ``data_batch_*`` files        | read as an image folder; the batch files are never opened                |
| EXIF-rotated JPEG                                | upright in the search (in memory and streamed) and in ``predict``       |
| 16-bit PNG and other modes                       | 8-bit RGB with the right brightness (a 16-bit PNG does not turn white)  |
| duplicate across splits                          | reported, listed in duplicates.csv, dropped from val (kept with the flag)|
| single folder that tune_tl splits                | no file on both sides of the split                                      |
| data changed before resume / retrain / --recheck | exit 2 naming the counts, before Ray; nothing written                   |
"""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from spaces import tiny_space, write_tiny_space
from test_bad_inputs import snapshot

from tests.data.images import write_class_tree, write_split_folder
from tune_tl.cli import main
from tune_tl.config import DataSpec
from tune_tl.data.cifar10 import TRAIN_BATCHES
from tune_tl.data.imagefolder import load_imagefolder
from tune_tl.data.manifest import record_data
from tune_tl.data.preprocess import Preprocessing, load_rgb
from tune_tl.data.sources import load_data, with_data_path
from tune_tl.data.streaming import ImageFiles
from tune_tl.errors import TuneTLError
from tune_tl.search.recheck import recheck_top
from tune_tl.store.search_run import SearchRun


class Payload:
    """Pickles as ``os.system("touch MARKER")``: what a crafted batch file runs when ``pickle.load`` reads it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_crafted_batches(folder: Path, marker: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*TRAIN_BATCHES, "test_batch"):
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": Payload(marker), b"labels": [0]}, fh)


def refused(argv: list[str], capsys) -> str:
    """Run the CLI in-process; it must exit 2 with one ``tune-tl: error:`` line, which is returned."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("tune-tl: error: "), err
    return err[0]


# ---------------------------------------------------------------------------------------------- pickles


def test_a_crafted_cifar_batch_is_refused_naming_the_file_and_its_payload_never_runs(tmp_path, capsys):
    marker, out = tmp_path / "marker", tmp_path / "out"
    write_crafted_batches(tmp_path / "cifar-10-batches-py", marker)
    space = tmp_path / "space.yaml"
    space.write_text(tiny_space(data={"source": "cifar10", "path": str(tmp_path / "cifar-10-batches-py")}))
    before = snapshot(tmp_path)
    line = refused(["search", str(space), "--output", str(out)], capsys)
    assert "data_batch_1: refused to unpickle it: it names posix.system" in line
    assert not marker.exists(), "the payload ran"
    assert not out.exists() and snapshot(tmp_path) == before, "a refused search wrote something"


def test_an_image_folder_of_only_cifar_batch_files_says_to_name_the_source_and_unpickles_nothing(tmp_path, capsys):
    marker = tmp_path / "marker"
    write_crafted_batches(tmp_path / "photos", marker)
    space = write_tiny_space(tmp_path)
    line = refused(["search", str(space), "--data", str(tmp_path / "photos"), "--output", str(tmp_path / "out")], capsys)
    assert "holds CIFAR-10 batch files" in line and "data.source: cifar10" in line and "pickles" in line
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_class_folders_beside_data_batch_files_are_an_image_folder_and_the_batches_are_never_opened(tmp_path):
    marker = tmp_path / "marker"
    photos = write_class_tree(tmp_path / "photos", classes=("a", "b"), per_class=5)
    write_crafted_batches(photos, marker)  # data_batch_1..5 and test_batch beside a/ and b/
    data = with_data_path(DataSpec(), str(photos))  # what `tune-tl search --data photos` does
    assert data.source == "imagefolder"
    loaded = load_data(data, [32], seed=0)
    assert loaded.data.classes == ["a", "b"] and not marker.exists()
    assert not any(name.startswith("data_batch") for name in loaded.manifest), "only the class folders are data"


# ---------------------------------------------------------------------------------------------- photos


def write_portrait_jpeg(path: Path) -> Path:
    """Stored 64 wide × 32 high (left red, right blue) with EXIF Orientation 6: a viewer shows it 32 × 64,
    red on top, blue below, as a phone's portrait photo."""
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :32] = (255, 0, 0)
    pixels[:, 32:] = (0, 0, 255)
    exif = Image.Image().getexif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    return path


def assert_upright(square: np.ndarray) -> None:
    """A (3, R, R) crop of the portrait: red across the top row, blue across the bottom one."""
    top, bottom = square[:, 0, :].astype(int), square[:, -1, :].astype(int)
    assert (top[0] > 200).all() and (top[2] < 60).all(), "the top row is not red: the photo was read sideways"
    assert (bottom[2] > 200).all() and (bottom[0] < 60).all(), "the bottom row is not blue: the photo was read sideways"


def test_an_exif_rotated_jpeg_is_upright_in_memory_streamed_and_in_predict(tmp_path):
    photos = write_class_tree(tmp_path / "photos", classes=("a", "b"), per_class=5)
    file = write_portrait_jpeg(photos / "a" / "portrait.jpg")
    loaded = load_imagefolder(photos, [32], 0.4, 0, memory_budget_mb=1e6, skip_bad_images=False)
    split = loaded.data.splits[32]
    images = np.concatenate([split.train_x, split.val_x])
    reds_on_top = [i for i, x in enumerate(images) if (x[0, 0] > 200).all() and (x[2, -1] > 200).all()]
    assert len(reds_on_top) == 1, "the portrait is upright among the in-memory images"
    assert_upright(images[reds_on_top[0]])

    streamed = load_imagefolder(photos, [32], 0.4, 0, memory_budget_mb=1e-6, skip_bad_images=False).data.splits[32]
    files = streamed.train_files + streamed.val_files
    image, _ = ImageFiles(files, np.zeros(len(files), np.int64), 32)[files.index(str(file))]
    assert_upright(image.numpy())
    # Its own memory, not a view of PIL's read-only buffer (torch warns on those, into the trial's log).
    assert image.is_contiguous() and image.numpy().flags.writeable

    pre = Preprocessing(32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # normalised = pixels / 255, as predict feeds the model
    assert_upright((pre.batch([load_rgb(str(file))])[0] * 255).round().to(torch.uint8).numpy())
    assert_upright((pre.batch([Image.open(file)])[0] * 255).round().to(torch.uint8).numpy())  # a PIL image handed to the API


def grey16(path: Path, value: int) -> None:
    Image.fromarray(np.full((16, 16), value, np.uint16)).save(path)


def grey16_big_endian(path: Path, value: int) -> None:
    Image.fromarray(np.full((16, 16), value, ">u2")).save(path)


def grey32(path: Path, value: int) -> None:
    Image.fromarray(np.full((16, 16), value, np.int32)).save(path)


def grey_float(path: Path, value: float) -> None:
    Image.fromarray(np.full((16, 16), value, np.float32)).save(path)


def palette_with_transparency(path: Path, _value) -> None:
    img = Image.new("P", (16, 16), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.save(path, transparency=0)


def grey_alpha(path: Path, _value) -> None:
    Image.fromarray(np.dstack([np.full((16, 16), 50, np.uint8), np.zeros((16, 16), np.uint8)]), "LA").save(path)


def rgba_half(path: Path, _value) -> None:
    Image.fromarray(np.dstack([np.zeros((16, 16, 3), np.uint8), np.full((16, 16), 128, np.uint8)]), "RGBA").save(path)


def cmyk(path: Path, _value) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=100)  # pure red ink


MODES = [  # (case, file name, writer, value, expected RGB of the pixel at (8, 8))
    ("png_16bit_mid_grey", "g.png", grey16, 32768, (128, 128, 128)),
    ("png_16bit_white", "w.png", grey16, 65535, (255, 255, 255)),
    ("png_16bit_dark", "d.png", grey16, 4096, (16, 16, 16)),
    ("tiff_16bit_big_endian", "g.tif", grey16_big_endian, 32768, (128, 128, 128)),
    ("tiff_32bit_int_as_16bit", "i.tif", grey32, 32768, (128, 128, 128)),
    ("tiff_32bit_int_8bit_values", "i8.tif", grey32, 100, (100, 100, 100)),
    ("tiff_float_0_to_1", "f.tif", grey_float, 0.5, (128, 128, 128)),
    ("tiff_float_0_to_255", "f255.tif", grey_float, 200.0, (200, 200, 200)),
    ("palette_transparent_colour", "p.png", palette_with_transparency, None, (10, 20, 30)),
    ("grey_alpha_transparent_is_white", "la.png", grey_alpha, None, (255, 255, 255)),
    ("rgba_half_transparent_on_white", "rgba.png", rgba_half, None, (127, 127, 127)),
    ("cmyk_jpeg", "c.jpg", cmyk, None, (255, 0, 0)),
]


@pytest.mark.parametrize("name,writer,value,expected", [m[1:] for m in MODES], ids=[m[0] for m in MODES])
def test_every_image_mode_becomes_8bit_rgb_with_the_right_brightness(tmp_path, name, writer, value, expected):
    writer(tmp_path / name, value)
    rgb = load_rgb(str(tmp_path / name))
    assert rgb.mode == "RGB"
    assert np.allclose(np.asarray(rgb)[8, 8], expected, atol=3), (Image.open(tmp_path / name).mode, np.asarray(rgb)[8, 8])


def test_a_16bit_png_in_an_image_folder_keeps_its_mean_not_white(tmp_path):
    photos = write_class_tree(tmp_path / "photos", classes=("a", "b"), per_class=5)
    gradient = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))  # mean 32767.5 -> 127.5
    Image.fromarray(gradient).save(photos / "a" / "scan16.png")
    loaded = load_imagefolder(photos, [64], 0.4, 0, memory_budget_mb=1e6, skip_bad_images=False)
    split = loaded.data.splits[64]
    images = np.concatenate([split.train_x, split.val_x])
    greys = [x for x in images if (x[0] == x[1]).all() and (x[1] == x[2]).all()]
    assert len(greys) == 1 and abs(greys[0].mean() - 127.5) < 2, [g.mean() for g in greys]


# ---------------------------------------------------------------------------------------------- duplicates


def copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())


def folder_with_copies(tmp_path: Path) -> Path:
    """train/val/test of 3 classes, plus: two val images and one test image copied from train, a copy inside a
    train class, and a train image copied under another class (conflicting labels)."""
    root = write_split_folder(tmp_path / "photos", train=6, val=3, test=2)
    copy_file(root / "train/a/0.png", root / "val/a/copy-of-train.png")
    copy_file(root / "train/b/1.png", root / "val/b/copy-of-train.png")
    copy_file(root / "train/c/2.png", root / "test/c/copy-of-train.png")
    copy_file(root / "train/a/3.png", root / "train/a/again.png")
    copy_file(root / "train/b/4.png", root / "train/c/labelled-c.png")
    return root


def test_duplicates_across_splits_are_reported_listed_and_dropped_from_val_and_test(tmp_path, caplog):
    root = folder_with_copies(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tune_tl"):
        loaded = load_data(DataSpec(source="imagefolder", path=str(root)), [32], seed=0)
    split = loaded.data.splits[32]
    assert (len(split.val_y), len(split.test_y)) == (9, 6), "the copies of training images left val and test"
    assert "3 val/test file(s) byte-identical to an earlier split's file (1 test, 2 val): dropped 3" in caplog.text
    assert "1 repeated within a class" in caplog.text and "1 under two different classes" in caplog.text

    run = SearchRun(tmp_path / "search")
    record_data(run, loaded)
    with open(tmp_path / "search" / "duplicates.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "duplicate_of", "split", "kind", "dropped"]
    assert {(r["path"], r["duplicate_of"], r["split"], r["kind"], r["dropped"]) for r in rows} == {
        ("val/a/copy-of-train.png", "train/a/0.png", "val", "across splits", "true"),
        ("val/b/copy-of-train.png", "train/b/1.png", "val", "across splits", "true"),
        ("test/c/copy-of-train.png", "train/c/2.png", "test", "across splits", "true"),
        ("train/a/again.png", "train/a/3.png", "train", "same class", "false"),
        ("train/c/labelled-c.png", "train/b/4.png", "train", "conflicting labels", "false"),
    }


def test_keep_duplicates_keeps_them_in_val_and_still_lists_them(tmp_path, caplog):
    root = folder_with_copies(tmp_path)
    data = with_data_path(DataSpec(), str(root), keep_duplicates=True)  # --keep-duplicates
    with caplog.at_level(logging.WARNING, logger="tune_tl"):
        loaded = load_data(data, [32], seed=0)
    split = loaded.data.splits[32]
    assert (len(split.val_y), len(split.test_y)) == (11, 7)
    assert "kept, as --keep-duplicates" in caplog.text
    assert sum(d.dropped for d in loaded.duplicates) == 0 and len(loaded.duplicates) == 5


def test_the_keep_duplicates_space_key_is_read_from_a_space_file(tmp_path):
    from tune_tl.config.space import load_space

    space = write_tiny_space(tmp_path, data={"keep_duplicates": True})
    assert load_space(str(space)).data.keep_duplicates is True


def test_a_single_folder_split_by_tune_tl_never_puts_one_file_on_both_sides(tmp_path):
    photos = write_class_tree(tmp_path / "photos", classes=("a", "b"), per_class=10)
    for i in range(5):  # five images of each class twice
        for c in ("a", "b"):
            copy_file(photos / c / f"{i}.png", photos / c / f"{i}-copy.png")
    loaded = load_data(DataSpec(source="imagefolder", path=str(photos), val_fraction=0.5), [32], seed=0)
    split = loaded.data.splits[32]
    train = {x.tobytes() for x in split.train_x}
    assert not any(x.tobytes() in train for x in split.val_x), "an image is on both sides of the split"
    dropped = [d for d in loaded.duplicates if d.dropped]
    assert dropped and all(d.split == "val" for d in dropped)


def test_dropping_copies_that_empty_a_val_class_is_refused_with_the_flag_named(tmp_path):
    root = write_split_folder(tmp_path / "photos", classes=("a", "b"), train=4, val=1)
    (root / "val/a/0.png").write_bytes((root / "train/a/2.png").read_bytes())
    with pytest.raises(TuneTLError, match="class 'a' has no val image left.*--keep-duplicates"):
        load_data(DataSpec(source="imagefolder", path=str(root)), [32], seed=0)


# ---------------------------------------------------------------------------------------------- changed data


def change_data(photos: Path) -> None:
    """One image added, one removed, one changed."""
    copy_file(photos / "a" / "0.png", photos / "a" / "new.png")
    (photos / "b" / "0.png").unlink()
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(photos / "c" / "1.png")


@pytest.mark.slow
def test_changed_data_is_refused_by_resume_retrain_and_recheck_with_counts_before_ray(ray_local, tmp_path, capsys, monkeypatch):
    photos = write_class_tree(tmp_path / "photos", classes=("a", "b", "c"), per_class=6)
    space = write_tiny_space(tmp_path, data={"source": None, "val_fraction": 0.3}, budget={"samples": 1},
                             params={"freeze_blocks": "all", "head": "linear", "batch_size": 16})
    monkeypatch.chdir(tmp_path)  # data.path as typed is relative; the search records the absolute path too
    assert main(["search", str(space), "--data", "photos", "--no-probes", "--output", "out", "--name", "s"]) == 0
    root = tmp_path / "out" / "s"
    run = SearchRun.open(root)
    assert run.metadata["data_path"] == str(photos) and run.data_manifest_file.is_file()
    assert len(json.loads(run.data_manifest_file.read_text())["files"]) == 18

    change_data(photos)
    monkeypatch.chdir(tmp_path / "out")  # another folder: the relative data.path would point nowhere
    before = snapshot(root)
    expected = "changed since the search started: 1 images added, 1 removed, 1 changed (e.g. added a/new.png)"
    for argv in (["resume", str(root), "--samples", "2"], ["retrain", str(root), "--device", "cpu"]):
        assert expected in refused(argv, capsys)
    with pytest.raises(TuneTLError, match=r"tune-tl search --recheck .*1 images added, 1 removed, 1 changed"):
        recheck_top(root, 1, device="cpu")
    assert snapshot(root) == before, "a refused command changed the search folder"

    (root / "data_manifest.json").unlink()  # a search from before the manifest: the fingerprint still catches it
    assert "predates per-file records" in refused(["resume", str(root), "--samples", "2"], capsys)
