"""CIFAR-10 loads from a local torchvision-format folder, and only from there."""

import pickle

import numpy as np
import pytest

from tune_tl.config import DataSpec
from tune_tl.data import load_source, prepare
from tune_tl.data.cifar10 import FOLDER, TRAIN_BATCHES
from tune_tl.data.sources import with_data_path
from tune_tl.errors import TuneTLError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_fake_cifar(parent, per_batch=20, seed=0):
    """A tiny ``cifar-10-batches-py`` in the real format: pickled dicts with bytes keys, rows of 3072 bytes."""
    root = parent / FOLDER
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in (*TRAIN_BATCHES, "test_batch"):
        labels = [i % 10 for i in range(per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[:, :1024] = np.array(labels, dtype=np.uint8)[:, None] * 20  # red plane encodes the label
        with open(root / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, fh)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}, fh)
    return root


def test_fake_batches_load_as_uint8_images_with_class_names_and_a_test_set(tmp_path):
    write_fake_cifar(tmp_path)
    data = load_source("cifar10", str(tmp_path))  # the parent folder works, as torchvision's root does
    assert data.images.shape == (100, 3, 32, 32) and data.images.dtype == np.uint8
    assert data.classes == CLASSES and data.test_images.shape == (20, 3, 32, 32)
    assert (data.images[:, 0, 0, 0] == data.labels * 20).all(), "rows are channel-major 3×32×32"
    prepared = prepare(data, [32, 64], val_fraction=0.2, seed=0)
    assert prepared.splits[64].test_x.shape == (20, 3, 64, 64) and len(prepared.splits[32].val_y) == 20


def test_a_missing_cifar_folder_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(TuneTLError) as err:
        load_source("cifar10", str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and str(tmp_path / "nowhere" / FOLDER) in msg
    assert "never downloads" in msg and "cifar-10-python.tar.gz" in msg


def test_a_missing_batch_and_a_broken_batch_are_named(tmp_path):
    root = write_fake_cifar(tmp_path)
    (root / "data_batch_3").unlink()
    with pytest.raises(TuneTLError, match=r"\['data_batch_3'\] are missing"):
        load_source("cifar10", str(root))
    (root / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(TuneTLError, match="data_batch_3: cannot read CIFAR-10 batch file"):
        load_source("cifar10", str(root))


def test_data_flag_means_an_image_folder_unless_the_space_says_cifar10(tmp_path):
    root = write_fake_cifar(tmp_path / "c")

    data = with_data_path(DataSpec(), str(root), skip_bad_images=True)
    assert (data.source, data.path, data.skip_bad_images) == ("imagefolder", str(root), True), "never guessed from the files"
    cifar = with_data_path(DataSpec(source="cifar10"), str(root), keep_duplicates=True)
    assert (cifar.source, cifar.path, cifar.keep_duplicates) == ("cifar10", str(root), True)


def test_a_cifar_batch_that_names_any_other_global_is_refused_before_it_runs(tmp_path):
    root = write_fake_cifar(tmp_path)
    marker = tmp_path / "ran"
    with open(root / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": Payload(str(marker)), b"labels": []}, fh)
    with pytest.raises(TuneTLError, match=r"data_batch_2: refused to unpickle it: it names posix\.system"):
        load_source("cifar10", str(root))
    assert not marker.exists()


def test_batches_pickled_with_protocols_2_to_5_all_load(tmp_path):
    root = write_fake_cifar(tmp_path)
    for protocol, name in zip((2, 3, 4, 5, 5), TRAIN_BATCHES, strict=True):
        data = np.zeros((4, 3072), np.uint8)
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": [0, 1, 2, 3]}, fh, protocol=protocol)
    assert load_source("cifar10", str(root)).images.shape == (20, 3, 32, 32)


class Payload:
    """Pickles as ``os.system("touch MARKER")``: what a crafted batch file does."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)
