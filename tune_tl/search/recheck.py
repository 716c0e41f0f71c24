"""``tune-tl search --recheck K``: re-run the top K configs with more seeds, and pick the winner by mean.

On a small validation set (150 images) one seed's winner is partly luck. After the search, each of the
K best configs is trained again, without Ray, with ``seeds`` more training seeds (model init, batch
order and augmentation; the data split stays the search's, so every run is validated on the same
images) by the same recipe (``training.recipe.build_trial``). Results go to ``<search>/recheck``
(Parquet: ``trial_id``, ``seed``, ``best_val_acc``, ``best_epoch``); the summary shows mean ± sd over
the original run and the re-runs, and ``tune-tl export`` takes the winner by mean
(``store.ranking.shipped_row``: a probe above that mean wins instead).

    >>> rechecked = recheck_top("results/demo", k=3)       # doctest: +SKIP
    >>> rechecked[["trial_id", "mean", "sd"]]              # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import pandas as pd
import torch

from tune_tl.config.params import TrialConfig
from tune_tl.data.manifest import check_unchanged, data_fingerprint
from tune_tl.errors import TuneTLError
from tune_tl.store.ranking import ranked, recheck_table
from tune_tl.store.results import write_table_atomic
from tune_tl.store.schema import RECHECK_SCHEMA
from tune_tl.store.search_run import SearchRun
from tune_tl.training.context import prepare_context
from tune_tl.training.loop import fit
from tune_tl.training.recipe import build_trial

log = logging.getLogger(__name__)

#: Extra training seeds per rechecked config.
EXTRA_SEEDS = 2


def recheck_top(path: str | Path, k: int, seeds: int = EXTRA_SEEDS, device: str | None = None,
                space: str | Path | None = None) -> pd.DataFrame:
    """Re-run the ``k`` best configs of the search in ``path`` with ``seeds`` more seeds; return their
    ``store.ranking.recheck_table``.

    ``space``: the search's ``.py`` space file, as the user named it. Runs under the search folder's lock, so a
    resume of the same folder cannot write it at the same time.

    Raises:
        TuneTLError: ``k`` < 1, no finished trial to recheck, or the folder is in use.
    """
    if k < 1:
        raise TuneTLError(f"--recheck must be at least 1, got {k}")
    run = SearchRun.open(path, require_metadata=True, space=space)
    with run.lock():
        return _recheck_locked(run, k, seeds, device)


def _recheck_locked(run: SearchRun, k: int, seeds: int, device: str | None) -> pd.DataFrame:
    trials = run.trials()
    top = ranked(trials[~trials["probe"].eq(True)]).head(k)  # a probe's fit has no training seed to vary
    if top.empty:
        raise TuneTLError(f"{run.root}: no completed or pruned trial to recheck")
    spec = run.spec
    prepared = prepare_context(spec)
    check_unchanged(run, prepared.loaded, "tune-tl search --recheck", lambda: data_fingerprint(prepared.loaded.data))
    context = prepared.context
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for _, row in top.iterrows():
        cfg = TrialConfig.from_row(row)
        for seed in range(spec.seed + 1, spec.seed + 1 + seeds):
            plan = build_trial(cfg, dataclasses.replace(context, seed=seed, feature_cache=None), device)
            history = fit(plan.model, plan.split, plan.fit, param_groups=plan.param_groups)
            accs = [m.val_acc if math.isfinite(m.val_acc) else -1.0 for m in history]
            best = max(range(len(accs)), key=lambda i: (accs[i], i))
            rows.append({"trial_id": str(row["trial_id"]), "seed": seed, "best_val_acc": history[best].val_acc,
                         "best_epoch": history[best].epoch})
            log.info("recheck %s seed %d: best val_acc %.4f", row["trial_id"], seed, history[best].val_acc)
    write_table_atomic(rows, RECHECK_SCHEMA, run.recheck_dir)
    return recheck_table(run.trials(), run.recheck())
