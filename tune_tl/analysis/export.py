"""``tune-tl export DIR [--trial ID] [--to PATH]``: a trial's best epoch as a model folder, without retraining.

Every trial keeps the checkpoint of its best epoch by ``val_acc`` (next to its latest, which resume
needs), so the weights that scored the trial's recorded ``best_val_acc`` are written as they were:
predicting the validation images with the exported folder gives exactly that accuracy.

    >>> saved = export_model("results/demo")                 # the chosen winner  # doctest: +SKIP
    >>> saved.info["val_acc"], saved.directory               # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tune_tl.analysis.frame import Results, best_trial, load_results
from tune_tl.analysis.model_folder import save_model_folder
from tune_tl.config.params import TrialConfig
from tune_tl.errors import TuneTLError
from tune_tl.models import build_backbone
from tune_tl.store.ranking import shipped_row
from tune_tl.store.search_run import SearchRun
from tune_tl.training.recipe import build_network, preprocessing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportedModel:
    directory: Path
    info: dict[str, Any]


def export_model(search_dir: str | Path, trial_id: str | None = None, to: str | Path | None = None, program: bool = True,
                 space: str | Path | None = None, force: bool = False) -> ExportedModel:
    """Write trial ``trial_id``'s best-epoch weights (default: the best trial) as a model folder.

    Args:
        to: The folder to write (default ``<search>/models/<trial_id>-best``).
        program: Also write ``model.pt2`` (a ``torch.export`` program, for plain PyTorch).
        space: The search's ``.py`` space file, as the user names it (``--space``); a YAML space needs none.
        force: Replace ``to`` (as a whole) when it already exists; without it an existing folder is refused.

    Raises:
        TuneTLError: Unknown trial, no finished trial, no checkpoint of its best epoch on disk, or ``to`` exists.
    """
    run = SearchRun.open(search_dir, require_metadata=True, space=space)
    spec = run.spec  # first: a .py space without --space is refused before anything is read or written
    if to is not None and Path(to).exists() and not force:
        raise TuneTLError(f"--to {to}: already exists; choose another folder, or pass --force to replace it as a whole")
    row = pick_trial(load_results(run), trial_id, run)
    cfg = TrialConfig.from_row(row)
    state = run.best_checkpoint(str(row["trial_id"]))
    classes = run.classes
    backbone = cfg.backbone or spec.backbone.names[0]  # the trial's, when the search chose among several
    model = build_network(cfg, build_backbone(backbone, "none"), len(classes))  # architecture; the weights are the checkpoint's
    model.load_state_dict(state["model"])
    epoch = int(state["epoch"])
    info = {
        "trial_id": str(row["trial_id"]),
        "classes": classes,
        "preprocessing": preprocessing(cfg, model).to_dict(),
        "config": cfg.to_dict(),
        "val_acc": float(state["history"][-1]["val_acc"]),
        "epoch": epoch,
        "backbone": backbone,
        "backbone_weights": spec.backbone.weights,
        "made_by": "export",
        "search": str(run.root),
    }
    folder = Path(to) if to is not None else run.model_dir(f"{row['trial_id']}-best")
    save_model_folder(model, info, folder, program=program, replace=force or to is None)
    log.info("exported trial %s (epoch %d, val_acc %.4f) to %s", info["trial_id"], epoch, info["val_acc"], folder)
    return ExportedModel(folder, info)


def pick_trial(res: Results, trial_id: str | None, run: SearchRun) -> pd.Series:
    """Trial ``trial_id``'s row, or the trial to ship (``store.ranking.shipped_row``: best by mean over seeds after
    ``--recheck``, else the best)."""
    if trial_id is None:
        shipped = shipped_row(res.trials, run.recheck())
        if shipped is None:
            return best_trial(res)  # raises, saying why nothing can be exported yet
        return shipped
    rows = res.trials[res.trials["trial_id"] == trial_id]
    if rows.empty:
        known = ", ".join(res.trials["trial_id"].head(10)) + (" ..." if len(res.trials) > 10 else "")
        raise TuneTLError(f"--trial {trial_id!r} is not among the finished trials of {run.root} (known: {known})")
    return rows.iloc[0]
