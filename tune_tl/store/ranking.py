"""The one order of a search's trials, best first: the leaderboard, the summary's best trial, ``export``'s default.

Only completed and pruned trials have a comparable accuracy (a diverged trial's is not a measurement).
Ties on ``best_val_acc`` go to the trial that needed fewer epochs, then to the smaller ``trial_id``, so
every reader of the same table names the same winner.

    >>> best_row(pd.read_parquet("results/demo/trials"))["trial_id"]   # doctest: +SKIP
"""

from __future__ import annotations

import pandas as pd

#: Statuses whose ``best_val_acc`` is a real measurement.
RANKED_STATUSES = ("completed", "pruned")


def ranked(trials: pd.DataFrame) -> pd.DataFrame:
    """Completed and pruned trials with an accuracy, best first (ties: fewer epochs, then ``trial_id``)."""
    ok = trials[trials["status"].isin(RANKED_STATUSES) & trials["best_val_acc"].notna()]
    return ok.sort_values(["best_val_acc", "epochs_run", "trial_id"], ascending=[False, True, True], kind="stable")


def best_row(trials: pd.DataFrame) -> pd.Series | None:
    """The best trial's row, or ``None`` when no trial has a comparable accuracy yet."""
    order = ranked(trials)
    return order.iloc[0] if len(order) else None


def best_so_far(epochs: pd.DataFrame, start: pd.Timestamp, seconds: list[float]) -> dict[float, float | None]:
    """The best ``val_acc`` any epoch (probes included) had reached ``s`` seconds after ``start``, for each ``s``
    (``None`` before the first epoch): the anytime figures a summary shows."""
    done = epochs[epochs["val_acc"].notna()]
    elapsed = (done["time"] - start).dt.total_seconds()
    return {s: (float(done.loc[elapsed <= s, "val_acc"].max()) if (elapsed <= s).any() else None) for s in seconds}
