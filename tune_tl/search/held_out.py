"""An honest estimate: the data's test split stays in the driver, and the shipped model is scored on it once, at the end.

Every figure a search chooses by (a probe's, a trial's, ASHA's rungs, TPE's values, the ranking, the ensemble) is a
val accuracy, and the winner's is the maximum over every trial: optimistic. When the data has a test split (an image
folder's ``test/``, CIFAR-10's test batch), :func:`without_test` takes it out of what travels to the trials (Ray's
object store never holds a test image), and :func:`score_on_test` scores the model ``tune-tl export`` takes by
default on it once the search has ended; ``search.json`` keeps ``test`` (``trial_id``, ``test_acc``,
``test_images``). Nothing reads it back to choose.

    >>> prepared, tests = without_test(prepare_context(spec))   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from tune_tl.data.types import FileSplit, Split
from tune_tl.models import Backbone
from tune_tl.search.val_predictions import device_for, member_probabilities
from tune_tl.store.ranking import shipped_row
from tune_tl.store.search_run import SearchRun
from tune_tl.training.context import PreparedSearch

log = logging.getLogger(__name__)


def without_test(prepared: PreparedSearch) -> tuple[PreparedSearch, dict[int, Split | FileSplit]]:
    """``prepared`` with no test images in its trial context, and the splits (by resolution) that had some.

    ``prepared.loaded`` keeps them: the data manifest and fingerprint that resume and retrain check stay the same.
    """
    data = prepared.context.data
    tests = {r: s for r, s in data.splits.items() if s.test_y is not None and len(s.test_y)}
    if not tests:
        return prepared, {}
    splits = {r: dataclasses.replace(s, test_y=None, **({"test_files": None} if isinstance(s, FileSplit) else {"test_x": None}))
              for r, s in data.splits.items()}
    context = dataclasses.replace(prepared.context, data=dataclasses.replace(data, splits=splits))
    return dataclasses.replace(prepared, context=context), tests


def score_on_test(run: SearchRun, tests: dict[int, Split | FileSplit], backbones: dict[str, Backbone] | None = None,
                  cache: str | None = None, device: str | None = None) -> dict | None:
    """Score the shipped model (``store.ranking.shipped_row``, its kept best-epoch weights) on the test split once,
    and the ensemble chosen on val (``search.ensemble``) when it has several members; record both in ``search.json``
    (``test``) and return that record; ``None`` without a test split or a winner."""
    if not tests:
        return None
    row = shipped_row(run.trials(), run.recheck())
    if row is None:
        return None  # no finished trial: nothing was shipped
    split, dev = tests.get(int(row["resolution"])), device_for(device)
    probs = None if split is None else member_probabilities(run, row.to_dict(), split, "test", backbones or {}, cache, dev)
    if probs is None:  # a trial whose weights retention deleted, a probe whose backbone is not built here
        log.warning("no test score: the shipped %s %s cannot be scored here", "probe" if row.get("probe") else "trial", row["trial_id"])
        return None
    record = {"trial_id": str(row["trial_id"]), "test_acc": float((probs.argmax(1) == np.asarray(split.test_y)).mean()),
              "test_images": len(split.test_y), "val_acc": float(row["best_val_acc"])}
    ensemble = run.ensemble_record
    if ensemble and len(ensemble["members"]) > 1:
        score = ensemble_test_acc(run, ensemble, tests, backbones or {}, cache, dev, {record["trial_id"]: probs})
        if score is not None:
            record.update(ensemble_test_acc=score, ensemble_val_acc=float(ensemble["val_acc"]))
    run.update_metadata(test=record)
    log.info("test: the shipped trial %s scores %.4f on %d test images (val %.4f); never used to choose", record["trial_id"],
             record["test_acc"], record["test_images"], record["val_acc"])
    if "ensemble_test_acc" in record:
        log.info("test: the ensemble scores %.4f (val %.4f)", record["ensemble_test_acc"], record["ensemble_val_acc"])
    return record


def ensemble_test_acc(run: SearchRun, ensemble: dict, tests: dict[int, Split | FileSplit], backbones: dict[str, Backbone],
                      cache: str | None, device, scored: dict[str, np.ndarray] | None = None) -> float | None:
    """The ensemble's accuracy on the test split: its members' test probabilities, averaged with its weights; ``None``
    when a member cannot be scored here (its weights deleted, a probe's backbone not built). ``scored``: members'
    test probabilities already computed (the shipped trial's), not computed again."""
    rows = run.trials().set_index("trial_id", drop=False)
    total, labels = None, None
    for member in ensemble["members"]:
        row = rows.loc[member["trial_id"]].to_dict()
        split = tests.get(int(row["resolution"]))
        probs = (scored or {}).get(member["trial_id"])
        if probs is None and split is not None:
            probs = member_probabilities(run, row, split, "test", backbones, cache, device)
        if probs is None:
            log.warning("no ensemble test score: member %s cannot be scored on the test split", member["trial_id"])
            return None
        total = member["weight"] * probs + (0 if total is None else total)
        labels = np.asarray(split.test_y)
    return float((total.argmax(1) == labels).mean())
