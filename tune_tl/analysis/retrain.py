"""``tune-tl retrain`` and ``tune-tl predict``: turn a search's best config into a saved model, and use it.

Retraining is plain PyTorch (``train.fit``, no Ray) on the same data, split and seed the search used,
to the full epoch budget. The model goes to ``<search>/models/<trial_id>/`` (for a search on an object
store, ``./models/<trial_id>/`` on this machine, where ``predict`` reads it):

- ``model.pt``: ``state_dict()`` of the whole ``TransferModel`` (keys ``features.*`` and ``head.*``);
  also usable as ``backbone.weights`` of a new search (the head keys are dropped there);
- ``model.json``: config, class names, mean/std, resolution, backbone name, metrics.

    >>> saved = retrain("results/demo")              # doctest: +SKIP
    >>> predict(saved.directory, ["cat.png"])        # doctest: +SKIP
    [('cat.png', 'cat', 0.97)]
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tune_tl.errors import TuneTLError
from tune_tl.config.params import PARAMS, TrialConfig
from tune_tl.store.storage import Location

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedModel:
    directory: Path
    metrics: dict


def retrain(search_dir: str | Path, trial_id: str | None = None, device: str | None = None) -> SavedModel:
    """Retrain trial ``trial_id`` (default: the best) of the search in ``search_dir`` and save it.

    Raises:
        TuneTLError: Unknown trial, no finished trial, or a search without ``search.json``.
    """
    from tune_tl.analysis.frame import best_trial, load_results
    from tune_tl.data import load_source, prepare
    from tune_tl.models import build_backbone
    from tune_tl.training.loop import evaluate, fit
    from tune_tl.training.recipe import TrialContext, build_model, fit_config

    root = Location.parse(search_dir)
    res = load_results(root)
    if not res.search:
        raise TuneTLError(f"{root}/search.json is missing: retrain needs the search's data, backbone and budget")
    if trial_id is None:
        row = best_trial(res)
    else:
        rows = res.trials[res.trials["trial_id"] == trial_id]
        if rows.empty:
            raise TuneTLError(f"trial {trial_id!r} is not among the finished trials of {root} "
                              f"(known: {', '.join(res.trials['trial_id'].head(10))}{' ...' if len(res.trials) > 10 else ''})")
        row = rows.iloc[0]
    cfg = TrialConfig.from_dict({k: PARAMS[k].type(row[k]) for k in PARAMS if k in row.index and _present(row[k])})
    s = res.search
    data_spec, bb_spec = s["data"], s["backbone"]
    max_epochs, seed = int(s["budget"]["max_epochs"]), int(s.get("seed", 0))

    images = load_source(data_spec["source"], data_spec.get("path"))
    data = prepare(images, [cfg.resolution], data_spec["val_fraction"], seed)
    backbone = build_backbone(bb_spec["name"], bb_spec["weights"])
    ctx = TrialContext(bb_spec["name"], backbone.features.state_dict(), data, max_epochs, seed)
    model = build_model(cfg, ctx)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    fcfg = fit_config(cfg, ctx, model, device)
    split = data.splits[cfg.resolution]
    history = fit(model, split, fcfg, lambda m: log.info("epoch %d: val_acc %.4f", m.epoch, m.val_acc))
    test_x, test_y = getattr(split, "test_x", None), getattr(split, "test_y", None)
    if test_x is not None and len(test_y):
        on, (loss, acc) = "test", evaluate(model, test_x, test_y, fcfg)
    else:  # no held-out test split in this data source: say so rather than pretend
        on, (loss, acc) = "val", evaluate(model, split.val_x, split.val_y, fcfg)
    metrics = {"evaluated_on": on, "loss": loss, "accuracy": acc, "epochs": len(history),
               "search_best_val_acc": float(row["best_val_acc"]) if _present(row["best_val_acc"]) else None}

    out = (root.local_path if root.is_local else Path.cwd()) / "models" / str(row["trial_id"])
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".model.pt.tmp"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, out / "model.pt")
    info = {"trial_id": str(row["trial_id"]), "config": cfg.to_dict(), "classes": list(data.classes),
            "mean": list(model.backbone.mean), "std": list(model.backbone.std), "resolution": cfg.resolution,
            "backbone": bb_spec["name"], "backbone_weights": bb_spec["weights"], "metrics": metrics,
            "search": str(root)}
    from tune_tl.store.results import write_json_atomic

    write_json_atomic(info, out / "model.json")
    return SavedModel(out, metrics)


def load_model(model_path: str | Path):
    """A saved model (its folder, ``model.pt`` or ``model.json``) in eval mode, and its ``model.json``."""
    from tune_tl.models import TransferModel, build_backbone, build_head

    path = Path(model_path)
    folder = path if path.is_dir() else path.parent
    meta_file, weights = folder / "model.json", folder / "model.pt"
    if not meta_file.is_file() or not weights.is_file():
        raise TuneTLError(f"{path}: expected a model folder with model.pt and model.json (written by tune-tl retrain)")
    info = json.loads(meta_file.read_text())
    cfg = TrialConfig.from_dict({k: v for k, v in info["config"].items() if v is not None})
    backbone = build_backbone(info["backbone"], "none")  # architecture only; weights come from model.pt
    head = build_head(cfg.head, backbone.num_features, len(info["classes"]), cfg.head_hidden, cfg.head_dropout or 0.0)
    model = TransferModel(backbone, head)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval(), info


@torch.no_grad()
def predict(model_path: str | Path, images: list[str | Path]) -> list[tuple[str, str, float]]:
    """(image, class, probability) for each image file, preprocessed as in training."""
    from PIL import Image, UnidentifiedImageError

    from tune_tl.data.prepare import resize_uint8

    model, info = load_model(model_path)
    arrays = []
    for image in images:
        try:
            with Image.open(image) as im:
                arrays.append(np.array(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)[None])
        except (OSError, UnidentifiedImageError) as exc:
            raise TuneTLError(f"{image}: not a readable image ({exc})") from None
    r = int(info["resolution"])
    x = torch.from_numpy(np.concatenate([resize_uint8(a, r) for a in arrays])).float()
    mean = torch.tensor(info["mean"]).view(1, 3, 1, 1) * 255
    std = torch.tensor(info["std"]).view(1, 3, 1, 1) * 255
    probs = torch.softmax(model((x - mean) / std).float(), dim=1)
    p, idx = probs.max(dim=1)
    return [(str(image), info["classes"][int(i)], float(q)) for image, i, q in zip(images, idx, p)]


def _present(value) -> bool:
    import pandas as pd

    return bool(pd.notna(value))
