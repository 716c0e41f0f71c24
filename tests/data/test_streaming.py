"""The streaming fallback trains exactly as the in-memory path: same images, same order, same numbers."""

import torch
from torch import nn

from tests.data.images import write_class_tree
from tune_tl.data import FileSplit, Split
from tune_tl.data.augment import AugmentConfig
from tune_tl.data.imagefolder import load_imagefolder
from tune_tl.training.loop import FitConfig, fit


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def test_fit_on_streamed_files_matches_fit_on_shared_arrays(tmp_path):
    root = write_class_tree(tmp_path / "tree", per_class=10)
    memory = load_imagefolder(root, [32], 0.2, 0, 4096.0, False).data.splits[32]
    streamed = load_imagefolder(root, [32], 0.2, 0, 0.001, False).data.splits[32]
    assert isinstance(memory, Split) and isinstance(streamed, FileSplit)
    aug = AugmentConfig(crop_scale=0.5, flip=True, jitter=0.2)
    cfg = FitConfig(epochs=2, batch_size=8, lr=1e-2, augment=aug)
    a = fit(tiny_net(), memory, cfg)
    b = fit(tiny_net(), streamed, FitConfig(**{**cfg.__dict__, "num_workers": 2}))
    for ma, mb in zip(a, b, strict=False):
        assert abs(ma.train_loss - mb.train_loss) < 1e-5 and abs(ma.val_loss - mb.val_loss) < 1e-5
        assert ma.val_acc == mb.val_acc
