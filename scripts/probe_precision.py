"""Each backbone's linear probe on image folders, its pass in float32 and in bfloat16: val accuracy, LogME, seconds.

The pooled features and the scikit-learn probe a search's stage 0 computes (``frozen_features.pooled_features``,
``linear_probe.fit_linear_probe``), on the folder's own train/ and val/ (or a 20 % val split), at each backbone's
native size. The table in docs/benchmarks.md ("bfloat16 for the probes' pass") came from it:

    python scripts/probe_precision.py /work/data/chest_xray_pneumonia /work/data/dtd10_t
"""
import argparse
import time
from pathlib import Path

import torch

from tune_tl.data.imagefolder import load_imagefolder
from tune_tl.data.preprocess import Normaliser
from tune_tl.models import build_backbone
from tune_tl.models.transferability import logme
from tune_tl.training.frozen_features import pooled_features
from tune_tl.training.linear_probe import fit_linear_probe

SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("folders", nargs="+", type=Path)
args = parser.parse_args()
torch.set_num_threads(2)
print("| set | backbone | float32 val acc | bfloat16 val acc | LogME float32 / bfloat16 | pass seconds float32 / bfloat16 |")
print("|---|---|---|---|---|---|")
for folder in args.folders:
    data = load_imagefolder(folder, sorted(set(SIZES.values())), 0.2, 0, 20_000, True).data
    for name, size in SIZES.items():
        backbone, split = build_backbone(name), data.splits[size]
        normalise = Normaliser(backbone.mean, backbone.std, torch.device("cpu"))
        row = {}
        for dtype in (torch.float32, torch.bfloat16):
            started = time.perf_counter()
            features = pooled_features(name, backbone.features, split, normalise, 128, None, dtype=dtype)
            seconds = time.perf_counter() - started
            probe = fit_linear_probe(features["train"], split.train_y, data.num_classes, 0)
            row[dtype] = (probe.accuracy(features["val"], split.val_y), logme(features["train"], split.train_y), seconds)
        (a32, l32, s32), (a16, l16, s16) = row[torch.float32], row[torch.bfloat16]
        cells = [folder.name, f"{name} {size} px", f"{100 * a32:.2f} %", f"{100 * a16:.2f} %", f"{l32:.3f} / {l16:.3f}",
                 f"{s32:.0f} / {s16:.0f} s"]
        print("| " + " | ".join(cells) + " |", flush=True)
