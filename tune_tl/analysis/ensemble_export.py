"""``tune-tl export DIR --ensemble``: the ensemble a search chose on val (``search.json``'s ``ensemble``) as one folder.

The folder holds ``ensemble.json`` (``classes``, ``members``: each one's sub-folder and weight, ``val_acc``) and one
ordinary model folder per member under ``members/<trial_id>/`` (``analysis.model_folder``: its own weights and
preprocessing, so members may differ in backbone and resolution). ``tune-tl predict`` runs it: each member on the
images at its own preprocessing, the weighted average of their class probabilities, the top class. In plain
PyTorch: ``torch.export.load(member/model.pt2).module()`` per member, softmax, weighted sum.

A member whose best-epoch checkpoint retention deleted is a stage-0 probe: its network is the search's backbone
weights with the probe's head (``probe_heads.pt``), as the probe was measured.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from tune_tl.analysis.export import ExportedModel, export_model
from tune_tl.analysis.model_folder import INFO_FILE, save_model_folder, swap_in
from tune_tl.config.params import TrialConfig
from tune_tl.errors import TuneTLError
from tune_tl.models import build_backbone
from tune_tl.store.search_run import SearchRun
from tune_tl.training.recipe import build_network, preprocessing

log = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"
MEMBERS_DIR = "members"


def export_ensemble(search_dir: str | Path, to: str | Path | None = None, program: bool = True, force: bool = False) -> ExportedModel:
    """Write the search's ensemble (every member's weights and preprocessing) as one folder ``predict`` runs.

    Written as a whole, as a single model folder is (``analysis.model_folder.save_model_folder``): in a hidden
    sibling folder renamed into place; an existing ``to`` is refused unless ``force``.

    Raises:
        TuneTLError: The search has no ensemble (run ``tune-tl ensemble DIR``), a member's weights are gone, or ``to``
            exists without ``force``.
    """
    run = SearchRun.open(search_dir, require_metadata=True)
    ensemble = run.ensemble_record
    if not ensemble:
        raise TuneTLError(f"{run.root}: search.json has no ensemble; run `tune-tl ensemble {run.root}` first")
    folder = Path(to) if to is not None else run.model_dir("ensemble")
    if to is not None and folder.exists() and not force:
        raise TuneTLError(f"--to {to}: already exists; choose another folder, or pass --force to replace it as a whole")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        members = []
        for member in ensemble["members"]:
            trial_id = member["trial_id"]
            sub = tmp / MEMBERS_DIR / trial_id.replace("/", "_")
            try:
                export_model(run.root, trial_id, sub, program=program)
            except TuneTLError:
                if not trial_id.startswith("probe-"):
                    raise
                _probe_from_head(run, trial_id, sub, program)
            members.append({"folder": f"{MEMBERS_DIR}/{sub.name}", "trial_id": trial_id, "weight": member["weight"]})
        info = {"classes": run.classes, "members": members, "val_acc": ensemble["val_acc"], "made_by": "export --ensemble",
                "search": str(run.root)}
        (tmp / ENSEMBLE_FILE).write_text(json.dumps(info, indent=2))
        swap_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported an ensemble of %d member(s) (val_acc %.4f) to %s", len(members), ensemble["val_acc"], folder)
    return ExportedModel(folder, info)


def _probe_from_head(run: SearchRun, trial_id: str, folder: Path, program: bool) -> None:
    """A probe whose checkpoint was deleted: the search's backbone weights and the probe's head, as it was measured."""
    row = run.trials().set_index("trial_id").loc[trial_id].to_dict()
    cfg = TrialConfig.from_row(row)
    name = cfg.backbone or run.spec.backbone.names[0]
    head = run.probe_heads().get((name, cfg.resolution))
    if head is None:
        raise TuneTLError(f"{run.root}: no head of probe {trial_id} in probe_heads.pt")
    model = build_network(cfg, build_backbone(name, run.spec.backbone.weights), len(run.classes))
    model.head = torch.nn.Linear(head[0].shape[1], head[0].shape[0])
    with torch.no_grad():
        model.head.weight.copy_(head[0])
        model.head.bias.copy_(head[1])
    info = {"trial_id": trial_id, "classes": run.classes, "preprocessing": preprocessing(cfg, model).to_dict(), "config": cfg.to_dict(),
            "val_acc": float(row["best_val_acc"]), "epoch": 1, "backbone": name, "backbone_weights": run.spec.backbone.weights,
            "made_by": "export", "search": str(run.root)}
    save_model_folder(model, info, folder, program=program)


def is_ensemble(path: str | Path) -> bool:
    """Whether ``path`` (a folder, or a file in it) is an exported ensemble rather than one model folder."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return (folder / ENSEMBLE_FILE).is_file() and not (folder / INFO_FILE).is_file()


def ensemble_members(path: str | Path) -> tuple[dict, list[tuple[Path, float]]]:
    """``ensemble.json`` and each member's model folder with its weight."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    info = json.loads((folder / ENSEMBLE_FILE).read_text())
    return info, [(folder / m["folder"], float(m["weight"])) for m in info["members"]]
