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
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch

from tune_tl.config.params import TrialConfig
from tune_tl.data.preprocess import Preprocessing
from tune_tl.errors import TuneTLError
from tune_tl.models import build_backbone
from tune_tl.store.storage import replace_durably
from tune_tl.training.recipe import build_network

WEIGHTS_FILE = "model.pt"
PROGRAM_FILE = "model.pt2"
INFO_FILE = "model.json"


def save_model_folder(model: torch.nn.Module, info: dict[str, Any], folder: Path, program: bool = True,
                      replace: bool = False) -> Path:
    """Write ``model`` and ``info`` as the model folder ``folder``, as a whole.

    Everything is written into a hidden sibling folder, flushed to disk and renamed into place: a failure part-way
    leaves no folder (never new weights beside old preprocessing). ``replace``: an existing ``folder`` is replaced
    as a whole (moved aside, the new one renamed in, the old one removed); without it an existing one is refused.
    """
    folder = Path(folder)
    if folder.exists() and not replace:
        raise TuneTLError(f"{folder}: already exists; choose another folder, or pass --force to replace it as a whole")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        _write_files(model, info, tmp, program)
        swap_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _write_files(model: torch.nn.Module, info: dict[str, Any], folder: Path, program: bool) -> None:
    model = model.cpu().eval()
    # contiguous: a trial's model is channels_last (training.device); the file holds plain tensors for any reader
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)
    if program:
        r = int(info["preprocessing"]["resolution"])
        example = (torch.zeros(2, 3, r, r),)
        with torch.no_grad():
            exported = torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},))
        torch.export.save(exported, str(folder / PROGRAM_FILE))
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2, default=str))
    os.chmod(folder, 0o755)  # mkdtemp made it 0700; a model folder is as readable as any other output


def swap_in(new: Path, folder: Path) -> None:
    """Rename the finished folder ``new`` onto ``folder``; an old ``folder`` is moved aside first and removed after."""
    old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}") if folder.exists() else None
    if old is not None:
        os.replace(folder, old)
    try:
        replace_durably(new, folder)
    except OSError:
        if old is not None:
            os.replace(old, folder)  # put the old folder back: never no model at all
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_model_folder(model_path: str | Path):
    """A saved model (its folder, ``model.pt`` or ``model.json``) in eval mode, its ``model.json`` and ``Preprocessing``.

    Raises:
        TuneTLError: One line for any problem with the folder: a missing file, ``model.json`` that is not JSON or
            lacks a key, weights that are not a readable ``state_dict`` of the recorded network.
    """
    path = Path(model_path)
    folder = path if path.is_dir() else path.parent
    meta_file, weights = folder / INFO_FILE, folder / WEIGHTS_FILE
    if not meta_file.is_file() or not weights.is_file():
        raise TuneTLError(f"{path}: expected a model folder with {WEIGHTS_FILE} and {INFO_FILE} (written by tune-tl export or retrain)")
    try:
        info = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TuneTLError(f"{meta_file}: not readable JSON ({_first_line(exc)}); export or retrain the model again") from None
    missing = [key for key in ("classes", "config", "backbone", "preprocessing") if not isinstance(info, dict) or key not in info]
    if missing:
        raise TuneTLError(f"{meta_file}: has no {', '.join(missing)}; export or retrain the model again")
    try:
        cfg = TrialConfig.from_row(info["config"])
        preprocessing = Preprocessing.from_dict(info["preprocessing"])
        model = build_network(cfg, build_backbone(info["backbone"], "none"), len(info["classes"]))  # weights come from model.pt
    except TuneTLError as exc:
        raise TuneTLError(f"{meta_file}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TuneTLError(f"{meta_file}: its config or preprocessing is not valid ({type(exc).__name__}: {_first_line(exc)}); "
                          "export or retrain the model again") from None
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a truncated or foreign file; each is one line here
        raise TuneTLError(f"{weights}: not the weights of this model folder's network ({type(exc).__name__}: {_first_line(exc)}); "
                          "export or retrain the model again") from None
    return model.eval(), info, preprocessing


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""
