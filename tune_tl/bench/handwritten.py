"""A hand-written Ray Tune + OptunaSearch + ASHA script, as a typical user writes it (benchmark row (d)).

Plain on purpose: one trainable, a dict space over freeze depth / head / lr, Optuna's TPE, ASHA on
``training_iteration``. Only the data and the pretrained backbone come from tune_tl (a user would
load them with their own code; here they are the same arrays and weights as the other rows).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch
from torch import nn

from tune_tl.config import DataSpec
from tune_tl.data import load_data
from tune_tl.models import build_backbone


def train(config, data, num_epochs):

    torch.set_num_threads(1)
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", "imagenet")
    for block in backbone.blocks[: config["freeze"]]:
        for p in block.parameters():
            p.requires_grad = False
    hidden = 256
    head = nn.Linear(backbone.num_features, 10) if config["head"] == "linear" else nn.Sequential(
        nn.Linear(backbone.num_features, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    model = nn.Sequential(backbone.features, head)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config["lr"])
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    xs = lambda x: (torch.from_numpy(np.asarray(x)).float() / 255 - mean) / std  # noqa: E731
    tx, ty, vx, vy = xs(data.train_x), torch.from_numpy(data.train_y).long(), xs(data.val_x), torch.from_numpy(data.val_y).long()
    for _ in range(num_epochs):
        model.train()
        for idx in torch.randperm(len(tx)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(tx[idx]), ty[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = sum((model(vx[i:i + 256]).argmax(1) == vy[i:i + 256]).sum().item() for i in range(0, len(vx), 256)) / len(vx)
        tune.report({"val_acc": acc})


def run_handwritten(samples: int, max_epochs: int, resolution: int, storage) -> tuple[float, float]:
    """Run the script's search on digits at ``resolution``; returns (best val acc, wall seconds)."""


    start = time.time()
    data = load_data(DataSpec(), [resolution], 0).data.splits[resolution]
    space = {"freeze": tune.randint(0, 8), "head": tune.choice(["linear", "mlp"]), "lr": tune.loguniform(1e-4, 1e-2)}
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(train, data=data, num_epochs=max_epochs), {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", num_samples=samples, search_alg=OptunaSearch(seed=0),
                                    scheduler=ASHAScheduler(max_t=max_epochs, grace_period=1, reduction_factor=3)),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0),
    )
    results = tuner.fit()
    best = max(r.metrics_dataframe["val_acc"].max() for r in results if r.metrics_dataframe is not None)
    return float(best), time.time() - start
