"""The one order of a search's trials, best first, and the one trial to ship: the leaderboard, the progress view's
best so far, the summary's best trial, the recheck's winner and ``export``'s default all ask this module.

Only completed and pruned trials have a comparable accuracy (a diverged trial's is not a measurement).
Ties on ``best_val_acc`` go to the trial that needed fewer epochs, then to the smaller ``trial_id``, so
every reader of the same table names the same winner. After ``--recheck`` the trial to ship is the best
mean over seeds, unless a stage-0 probe (never re-run: its fit has no training seed) is above that mean.

    >>> best_row(pd.read_parquet("results/demo/trials"))["trial_id"]   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

#: Statuses whose ``best_val_acc`` is a real measurement.
RANKED_STATUSES = ("completed", "pruned")
#: The order: (column, ascending). Best accuracy first, then fewer epochs, then the smaller trial id.
ORDER = (("best_val_acc", False), ("epochs_run", True), ("trial_id", True))
#: Columns of :func:`recheck_table`.
RECHECK_COLUMNS = ["trial_id", "mean", "sd", "runs", "search_val_acc"]


def in_order(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (with :data:`ORDER`'s columns) best first; no row is left out."""
    return rows.sort_values([c for c, _ in ORDER], ascending=[a for _, a in ORDER], kind="stable")


def ranked(trials: pd.DataFrame) -> pd.DataFrame:
    """Completed and pruned trials with an accuracy, best first (ties: fewer epochs, then ``trial_id``)."""
    return in_order(trials[trials["status"].isin(RANKED_STATUSES) & trials["best_val_acc"].notna()])


def best_row(trials: pd.DataFrame) -> pd.Series | None:
    """The best trial's row, or ``None`` when no trial has a comparable accuracy yet."""
    order = ranked(trials)
    return order.iloc[0] if len(order) else None


def best_of(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The first of ``rows`` (dicts with :data:`ORDER`'s keys, e.g. trials still running) in the same order."""
    rows = list(rows)
    return None if not rows else in_order(pd.DataFrame(rows)).iloc[0].to_dict()


def recheck_table(trials: pd.DataFrame, recheck: pd.DataFrame) -> pd.DataFrame:
    """Per rechecked trial (``--recheck``): ``mean`` and ``sd`` of best val_acc over its search run and its re-runs
    with other seeds, ``runs``, the search's ``search_val_acc``; best mean first (empty if not rechecked)."""
    if recheck.empty:
        return pd.DataFrame(columns=RECHECK_COLUMNS)
    by_id = trials.set_index("trial_id")
    first = by_id.loc[by_id.index.intersection(recheck["trial_id"].unique()), "best_val_acc"]
    runs = pd.concat([recheck[["trial_id", "best_val_acc"]], first.rename("best_val_acc").rename_axis("trial_id").reset_index()])
    out = runs.groupby("trial_id")["best_val_acc"].agg(mean="mean", sd="std", runs="count").reset_index()
    out["search_val_acc"] = out["trial_id"].map(first)
    return out.sort_values(["mean", "trial_id"], ascending=[False, True]).reset_index(drop=True)[RECHECK_COLUMNS]


#: How far (in val accuracy) the ensemble chosen on val must beat its best single member for ``tune-tl export`` to ship
#: it by default. Its val figure is a maximum over choices made on val, so a tie or a one-image gain is not enough:
#: on the photo sets, val gains of 1.1 and 3.0 points came with +0.8 and +3.5 on test (docs/benchmarks.md).
ENSEMBLE_SHIP_MARGIN = 0.01


def ensemble_ships(ensemble: Mapping[str, Any] | None) -> bool:
    """Whether ``tune-tl export`` ships ``search.json``'s ``ensemble`` by default (``--single``: the trial below instead):
    it has several members and beats the best single one on val by :data:`ENSEMBLE_SHIP_MARGIN`."""
    if not ensemble or len(ensemble.get("members", ())) < 2:
        return False
    return float(ensemble["val_acc"]) - float(ensemble["best_single_val_acc"]) >= ENSEMBLE_SHIP_MARGIN - 1e-9


def shipped_row(trials: pd.DataFrame, recheck: pd.DataFrame | None = None) -> pd.Series | None:
    """The trial to ship (``tune-tl export``'s default): the best mean over seeds when the search was rechecked,
    unless the best probe's accuracy is above that mean; else :func:`best_row`. ``None``: nothing to rank yet."""
    rechecked = recheck_table(trials, recheck) if recheck is not None else pd.DataFrame(columns=RECHECK_COLUMNS)
    if rechecked.empty:
        return best_row(trials)
    probe = best_row(trials[trials["probe"].eq(True)])
    if probe is not None and probe["best_val_acc"] > rechecked["mean"].iloc[0]:
        return probe
    return trials.set_index("trial_id", drop=False).loc[rechecked["trial_id"].iloc[0]]


def best_so_far(epochs: pd.DataFrame, start: pd.Timestamp, seconds: list[float]) -> dict[float, float | None]:
    """The best ``val_acc`` any epoch (probes included) had reached ``s`` seconds after ``start``, for each ``s``
    (``None`` before the first epoch): the anytime figures a summary shows."""
    done = epochs[epochs["val_acc"].notna()]
    elapsed = (done["time"] - start).dt.total_seconds()
    return {s: (float(done.loc[elapsed <= s, "val_acc"].max()) if (elapsed <= s).any() else None) for s in seconds}
