"""``tune-tl retrain``: train a search's best config again, without Ray, and save it as a model folder.

Retraining is plain PyTorch (``training.loop.fit``) on the search's own data, loaded by the same
``load_data`` step the search used (digits, CIFAR-10 and image folders alike), with the same split,
seed and recipe (``training.recipe.build_trial``), to the full epoch budget. ``train_on="train+val"``
trains on the validation images too. The model is evaluated on the data's test split when it has one
(an image folder's ``test/``, CIFAR-10's test batch); otherwise on the validation split, which says so.
The folder (``tune_tl.analysis.model_folder``) goes to ``<search>/models/<trial_id>/`` (for a search on
an object store, ``./models/<trial_id>/`` on this machine), where ``predict`` reads it.

    >>> saved = retrain("results/demo")              # doctest: +SKIP
    >>> predict(saved.directory, ["cat.png"])        # doctest: +SKIP
    [('cat.png', 'cat', 0.97)]
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tune_tl.analysis.export import pick_trial
from tune_tl.analysis.frame import load_results
from tune_tl.analysis.model_folder import save_model_folder
from tune_tl.config.params import TrialConfig
from tune_tl.data.manifest import check_unchanged, data_fingerprint
from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import FileSplit
from tune_tl.errors import TuneTLError
from tune_tl.store.search_run import SearchRun
from tune_tl.training.context import prepare_context
from tune_tl.training.evaluate import evaluate_split
from tune_tl.training.linear_probe import measure_probe
from tune_tl.training.loop import fit
from tune_tl.training.recipe import build_trial

log = logging.getLogger(__name__)

TRAIN_ON = ("train", "train+val")


@dataclass(frozen=True)
class SavedModel:
    directory: Path
    metrics: dict


def retrain(search_dir: str | Path, trial_id: str | None = None, device: str | None = None, train_on: str = "train",
            program: bool = True, space: str | Path | None = None) -> SavedModel:
    """Retrain trial ``trial_id`` (default: the best) of the search in ``search_dir`` and save it.

    Args:
        train_on: ``train`` (the search's training split) or ``train+val`` (also the validation images).
        program: Also write ``model.pt2`` (a ``torch.export`` program, for plain PyTorch).
        space: The search's ``.py`` space file, as the user names it (``--space``); a YAML space needs none.

    Raises:
        TuneTLError: Unknown trial, no finished trial, a search without ``search.json``, or its data gone.
    """
    if train_on not in TRAIN_ON:
        raise TuneTLError(f"--train-on must be one of {list(TRAIN_ON)}, got {train_on!r}")
    run = SearchRun.open(search_dir, require_metadata=True, space=space)
    spec = run.spec  # first: a .py space without --space is refused before anything is read
    row = pick_trial(load_results(run), trial_id, run)
    cfg = TrialConfig.from_row(row)
    name = cfg.backbone or spec.backbone.names[0]  # the trial's, when the search chose among several
    prepared = prepare_context(spec, resolutions=[cfg.resolution], backbones=[name])
    check_unchanged(run, prepared.loaded, "tune-tl retrain", lambda: data_fingerprint(prepared.loaded.data))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    plan = build_trial(cfg, prepared.context, device)
    split = plan.split if train_on == "train" else _with_val_in_train(plan.split)
    if row["probe"] == True:  # noqa: E712 (a numpy bool) - a stage-0 probe: scikit-learn fits its head again, as the search did
        measured = measure_probe(prepared.backbones[name], split, prepared.context.data.num_classes, spec.seed, device=device)
        plan.model.head = measured.probe.as_linear()
        epochs = 1
    else:
        epochs = len(fit(plan.model, split, plan.fit, lambda m: log.info("epoch %d: val_acc %.4f", m.epoch, m.val_acc),
                         param_groups=plan.param_groups))
    test = _test_as_val(split)
    normalise = Normaliser(plan.fit.mean, plan.fit.std, device)
    if test is not None:
        on, (loss, acc, _) = "test", evaluate_split(plan.model, test, normalise, plan.fit.eval_batch_size)
    elif train_on == "train":  # no held-out test split in this data source: say so rather than pretend
        on, (loss, acc, _) = "val", evaluate_split(plan.model, split, normalise, plan.fit.eval_batch_size)
    else:
        on, loss, acc = None, None, None  # trained on every labelled image: nothing left to evaluate on
    metrics = {"evaluated_on": on, "loss": loss, "accuracy": acc, "epochs": epochs, "train_on": train_on,
               "search_best_val_acc": float(row["best_val_acc"]) if row["best_val_acc"] == row["best_val_acc"] else None}
    info = {"trial_id": str(row["trial_id"]), "classes": list(prepared.context.data.classes), "preprocessing": plan.preprocessing.to_dict(),
            "config": cfg.to_dict(), "val_acc": acc if on == "val" else None, "backbone": name,
            "backbone_weights": spec.backbone.weights, "made_by": "retrain", "metrics": metrics, "search": str(run.root)}
    out = save_model_folder(plan.model, info, run.model_dir(str(row["trial_id"])), program=program, replace=True)
    return SavedModel(out, metrics)


def _with_val_in_train(split):
    """The split with its validation images appended to the training images (``--train-on train+val``)."""
    if isinstance(split, FileSplit):
        return dataclasses.replace(split, train_files=split.train_files + split.val_files,
                                   train_y=np.concatenate([split.train_y, split.val_y]))
    return dataclasses.replace(split, train_x=np.concatenate([split.train_x, split.val_x]),
                               train_y=np.concatenate([split.train_y, split.val_y]))


def _test_as_val(split):
    """The split's test part in the validation slot (what ``evaluate_split`` reads), or ``None``."""
    if split.test_y is None or not len(split.test_y):
        return None
    if isinstance(split, FileSplit):
        return dataclasses.replace(split, val_files=split.test_files, val_y=split.test_y)
    return dataclasses.replace(split, val_x=split.test_x, val_y=split.test_y)
