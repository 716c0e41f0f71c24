"""A hand-written Ray Tune + OptunaSearch + ASHA script, as a typical user writes it (the benchmarks' baseline search).

Plain on purpose: one trainable, a dict space over freeze depth / head / lr, Optuna's TPE, ASHA on
``training_iteration``, Lite0 at the resolution given, no augmentation. Only the data and the
pretrained backbone come from tune_tl (a user would load them with their own code; here they are the
same arrays, split and weights as the other rows). The headline runs it on digits with a trial count;
the photos benchmark runs it on an image folder under a time budget (``time_budget_s``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch
from torch import nn

from tune_tl.config import DataSpec
from tune_tl.data import load_data
from tune_tl.models import build_backbone


@dataclass(frozen=True)
class HandwrittenResult:
    """What the script's search gave: its best val acc, its wall (data loading included) and every epoch."""

    best: float
    wall: float
    #: (seconds since ``tuner.fit()`` started, val acc) of every reported epoch, from Ray's results.
    curve: tuple[tuple[float, float], ...]
    #: Ray's storage folder of the experiment (what the script leaves on disk).
    storage: Path
    trials: int = 0


def train(config, data, num_classes, num_epochs):

    torch.set_num_threads(1)
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", "imagenet")
    for block in backbone.blocks[: config["freeze"]]:
        for p in block.parameters():
            p.requires_grad = False
    hidden = 256
    head = nn.Linear(backbone.num_features, num_classes) if config["head"] == "linear" else nn.Sequential(
        nn.Linear(backbone.num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    model = nn.Sequential(backbone.features, head)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config["lr"])
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    xs = lambda x: (torch.from_numpy(np.array(x)).float() / 255 - mean) / std  # noqa: E731
    ty, vy = torch.tensor(data.train_y, dtype=torch.long), torch.tensor(data.val_y, dtype=torch.long)
    for _ in range(num_epochs):
        model.train()
        for idx in torch.randperm(len(ty)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xs(data.train_x[idx.numpy()])), ty[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = sum((model(xs(data.val_x[i:i + 256])).argmax(1) == vy[i:i + 256]).sum().item() for i in range(0, len(vy), 256)) / len(vy)
        tune.report({"val_acc": acc})


def run_handwritten(samples: int, max_epochs: int, resolution: int, storage, data: DataSpec = DataSpec(),  # noqa: B008 - frozen dataclass, immutable
                    time_budget: float | None = None) -> HandwrittenResult:
    """Run the script's search on ``data`` (default: digits) at ``resolution``, for ``samples`` trials or ``time_budget`` seconds."""

    start = time.time()
    loaded = load_data(data, [resolution], 0).data
    space = {"freeze": tune.randint(0, 8), "head": tune.choice(["linear", "mlp"]), "lr": tune.loguniform(1e-4, 1e-2)}
    trainable = tune.with_parameters(train, data=loaded.splits[resolution], num_classes=loaded.num_classes, num_epochs=max_epochs)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", num_samples=samples, search_alg=OptunaSearch(seed=0),
                                    scheduler=ASHAScheduler(max_t=max_epochs, grace_period=1, reduction_factor=3),
                                    time_budget_s=time_budget),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0),
    )
    fit_start = time.time()
    results = tuner.fit()
    frames = [r.metrics_dataframe for r in results if r.metrics_dataframe is not None and "val_acc" in r.metrics_dataframe]
    curve = sorted((float(t) - fit_start, float(acc)) for f in frames for t, acc in zip(f["timestamp"], f["val_acc"], strict=True))
    best = max((acc for _, acc in curve), default=float("nan"))
    return HandwrittenResult(best, time.time() - start, tuple(curve), Path(storage), len(results))
