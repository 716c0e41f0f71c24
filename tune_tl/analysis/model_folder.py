"""A model folder, as ``tune-tl export`` and ``tune-tl retrain`` write it and ``tune-tl predict`` reads it.

- ``model.pt``: ``state_dict()`` of the whole ``TransferModel`` (keys ``features.*`` and ``head.*``);
  also usable as ``backbone.weights`` of a new search (the head keys are dropped there);
- ``model.pt2``: the same network as a ``torch.export`` program, loadable in plain PyTorch with
  ``torch.export.load(path).module()`` (no tune_tl needed);
- ``model.json``: ``trial_id``, ``classes``, ``preprocessing`` (resolution, resize rule, mean, std),
  ``config``, ``val_acc``, ``backbone``, and how it was made (``made_by``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from tune_tl.config.params import TrialConfig
from tune_tl.data.preprocess import Preprocessing
from tune_tl.errors import TuneTLError
from tune_tl.models import build_backbone
from tune_tl.training.recipe import build_network

WEIGHTS_FILE = "model.pt"
PROGRAM_FILE = "model.pt2"
INFO_FILE = "model.json"


def save_model_folder(model: torch.nn.Module, info: dict[str, Any], folder: Path, program: bool = True) -> Path:
    """Write ``model`` and ``info`` into ``folder`` (each file under a temporary name, then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    _atomic(folder / WEIGHTS_FILE, lambda tmp: torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp))
    if program:
        r = int(info["preprocessing"]["resolution"])
        example = (torch.zeros(2, 3, r, r),)
        with torch.no_grad():
            exported = torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},))
        _atomic(folder / PROGRAM_FILE, lambda tmp: torch.export.save(exported, tmp))
    _atomic(folder / INFO_FILE, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2, default=str)))
    return folder


def load_model_folder(model_path: str | Path):
    """A saved model (its folder, ``model.pt`` or ``model.json``) in eval mode, its ``model.json`` and ``Preprocessing``."""
    path = Path(model_path)
    folder = path if path.is_dir() else path.parent
    meta_file, weights = folder / INFO_FILE, folder / WEIGHTS_FILE
    if not meta_file.is_file() or not weights.is_file():
        raise TuneTLError(f"{path}: expected a model folder with {WEIGHTS_FILE} and {INFO_FILE} (written by tune-tl export or retrain)")
    info = json.loads(meta_file.read_text())
    cfg = TrialConfig.from_row(info["config"])
    model = build_network(cfg, build_backbone(info["backbone"], "none"), len(info["classes"]))  # weights come from model.pt
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval(), info, Preprocessing.from_dict(info["preprocessing"])


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # torch.export.save wants the .pt2 suffix
    write(str(tmp))
    os.replace(tmp, path)
