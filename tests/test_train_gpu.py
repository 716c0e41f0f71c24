"""Placing a fit: channels_last everywhere, and in-memory data copied to the GPU once when it fits.

Everything but the last test runs on the CPU: the placement decision takes the free memory as an
argument, and the resident path can be forced on the CPU to show it yields the host path's batches.
"""

import numpy as np
import pytest
import torch
from toy_models import toy_model

from tune_tl.analysis.model_folder import save_model_folder
from tune_tl.data.augment import AugmentConfig
from tune_tl.data.types import FileSplit, Split
from tune_tl.training import device as placement
from tune_tl.training.batches import batches as batches_of
from tune_tl.training.device import RESIDENT_FRACTION, memory_format, resident_on_device, resident_split
from tune_tl.training.loop import FitConfig, fit

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 120)
    images = rng.integers(0, 60, (120, 3, 16, 16)).astype(np.uint8)
    images[:, labels % 3, :8] += 150  # a learnable signal per class
    for a in (images, labels):
        a.setflags(write=False)  # as trials get them from Ray's object store
    return Split(images[:90], labels[:90], images[90:], labels[90:])


def config(**kw):
    return FitConfig(**{"epochs": 3, "batch_size": 16, "lr": 0.01, "mean": (0.5,) * 3, "std": (0.5,) * 3, "seed": 3, "eval_batch_size": 32,
                        **kw})


def test_data_on_the_cpu_is_never_made_resident():
    assert not resident_on_device(1, CPU, free_bytes=10**12)


def test_data_goes_to_the_gpu_only_within_a_quarter_of_its_free_memory():
    assert RESIDENT_FRACTION == 0.25  # several fractional-GPU trials share one GPU
    assert resident_on_device(250, CUDA, free_bytes=1000)
    assert not resident_on_device(251, CUDA, free_bytes=1000)


def test_streamed_files_are_never_resident():
    files = FileSplit(("a.png",), np.zeros(1, np.int64), ("b.png",), np.zeros(1, np.int64), 16)
    assert resident_split(files, CUDA) == {}


def test_channels_last_is_the_layout_on_cuda_and_on_the_cpu():
    # On the CPU too: oneDNN runs the Lites' depthwise convolutions about twice as fast in it (training.device).
    assert memory_format(CUDA) is torch.channels_last
    assert memory_format(CPU) is torch.channels_last


def test_a_cpu_fit_is_channels_last_and_copies_batch_by_batch(split, monkeypatch):
    seen = []
    monkeypatch.setattr("tune_tl.training.loop.resident_split", lambda *a: seen.append(resident_split(*a)) or seen[-1])
    model = toy_model(num_classes=4)
    fit(model, split, config(epochs=1))
    assert seen and all(r == {} for r in seen)
    assert model.backbone.blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_resident_batches_are_the_host_batches(split, monkeypatch):
    batches = [np.sort(b) for b in np.array_split(np.random.default_rng(1).permutation(90), 6)]
    host = list(batches_of(split, "train", batches))
    monkeypatch.setattr(placement, "resident_on_device", lambda *a, **k: True)  # force it on the CPU
    resident = list(batches_of(split, "train", batches, resident=resident_split(split, CPU)))
    assert len(resident) == len(host)
    for (hx, hy), (rx, ry) in zip(host, resident, strict=False):
        assert torch.equal(hx, rx) and torch.equal(hy, ry)


@pytest.mark.parametrize("kw", [{}, {"augment": AugmentConfig(crop_scale=0.5, flip=True, jitter=0.2)}], ids=["plain", "augmented"])
def test_a_fit_on_resident_data_matches_one_that_copies_each_batch(split, monkeypatch, kw):
    def history():
        return [(m.train_loss, m.val_loss, m.val_acc) for m in fit(toy_model(num_classes=4), split, config(**kw))]

    host = history()
    monkeypatch.setattr(placement, "resident_on_device", lambda *a, **k: True)
    assert history() == host


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_model_is_channels_last_the_data_resident_and_it_trains(split, monkeypatch):
    placed = []
    monkeypatch.setattr("tune_tl.training.loop.resident_split", lambda *a: placed.append(resident_split(*a)) or placed[-1])
    model = toy_model(num_classes=4)
    history = fit(model, split, config(device="cuda", epochs=4))
    conv = model.backbone.blocks[0][0].weight
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    assert set(placed[0]) == {"train", "val"} and placed[0]["train"][0].is_cuda  # a few KB fit easily
    assert all(np.isfinite(m.train_loss) and not m.diverged for m in history)
    assert history[-1].train_loss < history[0].train_loss


def test_a_model_folder_holds_plain_contiguous_tensors_though_trials_train_channels_last(tmp_path):
    model = toy_model(num_classes=4).to(memory_format=torch.channels_last)
    assert not all(v.is_contiguous() for v in model.state_dict().values())
    save_model_folder(model, {"classes": list("abcd")}, tmp_path / "m", program=False)
    state = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    assert state.keys() == model.state_dict().keys() and all(v.is_contiguous() for v in state.values())
