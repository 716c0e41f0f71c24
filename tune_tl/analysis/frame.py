"""Read a search's Parquet results into pandas, and the questions people ask of them.

Example:
    >>> res = load_results("results/search-20261123-101500")
    >>> leaderboard(res, top=5)                       # best trials first
    >>> param_summary(res, "freeze_blocks")           # accuracy by freeze depth
    >>> best_trial(res)["lr"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tune_tl.config.params import PARAMS
from tune_tl.errors import TuneTLError
from tune_tl.store.ranking import RANKED_STATUSES, best_row, ranked
from tune_tl.store.schema import STATUSES
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location


@dataclass(frozen=True)
class Results:
    """A search's tables and its metadata.

    Attributes:
        trials: One row per finished trial; the trial's parameters are columns.
        epochs: One row per trial and epoch.
        search: The ``search.json`` record (space text, options, seed, versions, times); ``{}`` if absent.
    """

    trials: pd.DataFrame
    epochs: pd.DataFrame
    search: dict[str, Any] = field(default_factory=dict)


def load_results(path: str | Path | Location | SearchRun) -> Results:
    """Load both tables of the search in ``path`` (a folder or an ``s3://``/``gs://`` URI); an
    empty table if none is written yet.

    Safe while the search is still writing: parts appear whole, and a part compacted away between
    listing and reading makes this list the folder again.

    Raises:
        TuneTLError: ``path`` is not a folder.
    """
    run = path if isinstance(path, SearchRun) else SearchRun.open(path)
    return Results(run.trials(), run.epochs(), run.metadata)


def leaderboard(results: Results, top: int | None = 10) -> pd.DataFrame:
    """Trials ranked by best validation accuracy, finished-and-comparable trials first.

    Completed and pruned trials come first in the one order of ``store.ranking.ranked`` (ties: fewer
    epochs, then ``trial_id``); the rest (diverged, failed, no accuracy) follow. The columns are the
    result columns, then the parameters.

    Example:
        >>> leaderboard(load_results("results/demo"), top=3)[["trial_id", "status", "best_val_acc"]]
    """
    t = results.trials
    first = ranked(t)
    order = pd.concat([first, t.drop(first.index).sort_values("trial_id")])
    order = order.reset_index(drop=True)
    order.index = pd.RangeIndex(1, len(order) + 1, name="rank")
    return order if top is None else order.head(top)


def best_trial(results: Results) -> pd.Series:
    """The best completed or pruned trial's row (parameters included).

    Raises:
        TuneTLError: No trial has finished with a usable accuracy yet.

    Example:
        >>> best = best_trial(load_results("results/demo"))
        >>> best["trial_id"], best["best_val_acc"], best["freeze_blocks"]
    """
    best = best_row(results.trials)
    if best is None:
        raise TuneTLError("no completed or pruned trial yet: nothing to rank (is the search still starting?)")
    return best


def param_summary(results: Results, param: str) -> pd.DataFrame:
    """Best and mean ``best_val_acc`` per value of one parameter, with trial counts by status.

    Continuous parameters (``lr``, ...) are grouped into quantile bins. Trials where ``param`` did
    not apply (a conditional parameter) form their own ``<n/a>`` group.

    Example:
        >>> param_summary(load_results("results/demo"), "freeze_blocks")
                       best   mean  trials  completed  pruned  diverged  error
        freeze_blocks
        0             0.975  0.930       3          1       2         0      0
    """
    t = results.trials
    if param not in t.columns:
        known = [c for c in t.columns if c in PARAMS]
        raise TuneTLError(f"{param!r} is not a column of this search's trials; parameters: {known}")
    key = t[param]
    if pd.api.types.is_float_dtype(key) and key.nunique() > 6:
        edges = key.quantile([i / 5 for i in range(6)]).unique()
        labels = [f"{a:.3g}–{b:.3g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
        key = pd.cut(key, edges, include_lowest=True, labels=labels).astype(str)
    key = key.astype(object).where(t[param].notna(), "<n/a>").rename(param)
    ok = t["best_val_acc"].where(t["status"].isin(RANKED_STATUSES))
    grouped = ok.groupby(key, sort=True, dropna=False)
    out = pd.DataFrame({"best": grouped.max(), "mean": grouped.mean(), "trials": t.groupby(key, dropna=False).size()})
    counts = pd.crosstab(key, t["status"]).reindex(columns=list(STATUSES), fill_value=0)
    return out.join(counts).fillna({s: 0 for s in counts.columns}).sort_values("best", ascending=False, na_position="last")
