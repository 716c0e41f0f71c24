"""A tiny backbone registered for the end-to-end tests (``tune_tl.register_backbone``): nine conv blocks, 23 k parameters.

End-to-end tests whose point is not the backbone search on it instead of EfficientNet-Lite0: building it
costs milliseconds instead of loading a 13 MB checkpoint in every driver process, a forward pass over
digits at 32 px a tenth of a CPU second, and a checkpoint a hundred kilobytes. It has nine blocks, as Lite0
has, so a space's block numbers (``freeze_blocks: 9`` = all) mean the same on both. Its "pretrained" weights are a
seeded initialisation calibrated on digits (``seeded_weights``), the same in every process; one epoch of a linear
head on them reaches about 35 % on digits (chance: 10 %), so a trial that trains beats one that does not.

Registered on import: by ``tests/conftest.py`` in every pytest process, and by ``tests/fault_injection/sitecustomize.py``
in every ``tune-tl`` process a test starts (``faults.Driver``). Ray's workers get it with the trial context, pickled
by value (this module is not importable there).
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import ray.cloudpickle
import torch
from torch import nn

import tune_tl

NAME = "tiny_test_cnn"
#: (in, out, stride) of each block: the stem halves 32 px to 16, two more stages to 4 x 4.
WIDTHS = [(3, 8, 2), (8, 8, 1), (8, 12, 2), (12, 12, 1), (12, 16, 2), (16, 16, 1), (16, 24, 1), (24, 24, 1), (24, 32, 1)]


def tiny_cnn() -> nn.Module:
    blocks = [nn.Sequential(nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()) for i, o, s in WIDTHS]
    blocks[-1] = blocks[-1][:2]  # no ReLU after the last: centred features, which a linear head learns from fast
    for block in blocks:
        nn.init.kaiming_normal_(block[0].weight, nonlinearity="relu")  # random features worth a linear probe
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def seeded_weights() -> dict[str, torch.Tensor]:
    """The same "pretrained" weights in every process, without a file: a seeded init whose BatchNorm statistics are
    those of scikit-learn's digits at 32 px (bundled, no download), so that each block's output has unit scale on
    the tests' data, as trained weights' have, and a linear head learns from it in a few steps."""
    images = torch.tensor(digits_images(), dtype=torch.float32)[:, None].expand(-1, 3, -1, -1) / 16
    images = nn.functional.interpolate(images, size=32, mode="bilinear") * 2 - 1  # mean = std = 0.5
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = tiny_cnn()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a plain average over the batches
    model.train()
    with torch.no_grad():
        for batch in images.split(256):
            model(batch)
        model.eval()
        last = model[len(WIDTHS) - 1][1]  # the last BatchNorm, with no ReLU after it: scale the pooled features to z-scores
        pooled = model(images)  # = weight * (pooled normalised map) + bias, per channel
        mean, std = pooled.mean(0), pooled.std(0)
        last.weight /= std
        last.bias.copy_((last.bias - mean) / std)
    return model.state_dict()


def digits_images() -> np.ndarray:
    """scikit-learn's digits (1,797 images of 8 x 8, values 0-16), read from the file it bundles: ``load_digits``
    would import scikit-learn, a second of CPU in every process that builds this backbone (trial workers do not
    import it otherwise)."""
    folder = importlib.util.find_spec("sklearn").submodule_search_locations[0]
    rows = np.loadtxt(Path(folder) / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    return rows[:, :-1].reshape(-1, 8, 8)  # the last column is the label


def blocks(model: nn.Module) -> list[nn.Module]:
    return list(model[:len(WIDTHS)])


def pool(model: nn.Module) -> nn.Module:
    return model[len(WIDTHS):]


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
tune_tl.register_backbone(NAME, tiny_cnn, blocks=blocks, num_features=WIDTHS[-1][1], input_size=32, mean=(0.5, 0.5, 0.5),
                          std=(0.5, 0.5, 0.5), weights=seeded_weights, pool=pool)
