"""Read a search's Parquet results into pandas, and the questions people ask of them.

Example:
    >>> res = load_results("results/search-20261123-101500")
    >>> leaderboard(res, top=5)                       # best trials first
    >>> param_summary(res, "freeze_blocks")           # accuracy by freeze depth
    >>> best_trial(res)["lr"]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tune_tl.errors import TuneTLError
from tune_tl.config.params import PARAMS
from tune_tl.store.schema import STATUSES
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location

#: Statuses whose ``best_val_acc`` is a real measurement (a diverged trial's is not comparable).
RANKED_STATUSES = ("completed", "pruned")


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


def load_search_info(path: str | Path | Location) -> dict[str, Any]:
    """The search's ``search.json`` record, or ``{}`` when it has none (yet)."""
    return SearchRun(path).metadata


def leaderboard(results: Results, top: int | None = 10) -> pd.DataFrame:
    """Trials ranked by best validation accuracy, finished-and-comparable trials first.

    Completed and pruned trials are ranked by ``best_val_acc`` (ties: fewer epochs first); diverged
    and failed trials follow. The columns are the result columns, then the parameters.

    Example:
        >>> leaderboard(load_results("results/demo"), top=3)[["trial_id", "status", "best_val_acc"]]
    """
    t = results.trials
    ranked = t["status"].isin(RANKED_STATUSES)
    order = pd.concat([
        t[ranked].sort_values(["best_val_acc", "epochs_run", "trial_id"], ascending=[False, True, True], na_position="last"),
        t[~ranked].sort_values("trial_id"),
    ])
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
    board = leaderboard(results, top=None)
    board = board[board["status"].isin(RANKED_STATUSES) & board["best_val_acc"].notna()]
    if board.empty:
        raise TuneTLError("no completed or pruned trial yet: nothing to rank (is the search still starting?)")
    return board.iloc[0]


def recheck_summary(run: SearchRun) -> pd.DataFrame:
    """Per rechecked trial (``--recheck``): ``mean`` and ``sd`` of best val_acc over its search run and its
    re-runs with other seeds, ``runs``, the search's ``search_val_acc``; best mean first (empty if not rechecked)."""
    again = run.recheck()
    if again.empty:
        return pd.DataFrame(columns=["trial_id", "mean", "sd", "runs", "search_val_acc"])
    trials = run.trials().set_index("trial_id")
    first = trials.loc[trials.index.intersection(again["trial_id"].unique()), "best_val_acc"]
    runs = pd.concat([again[["trial_id", "best_val_acc"]], first.rename("best_val_acc").rename_axis("trial_id").reset_index()])
    out = runs.groupby("trial_id")["best_val_acc"].agg(mean="mean", sd="std", runs="count").reset_index()
    out["search_val_acc"] = out["trial_id"].map(first)
    return out.sort_values(["mean", "trial_id"], ascending=[False, True]).reset_index(drop=True)


def chosen_winner(results: Results, run: SearchRun | None = None) -> pd.Series:
    """The trial to ship: the best mean over seeds when the search was rechecked, else ``best_trial``."""
    if run is not None:
        rechecked = recheck_summary(run)
        if not rechecked.empty:
            return results.trials.set_index("trial_id", drop=False).loc[rechecked["trial_id"].iloc[0]]
    return best_trial(results)


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
        labels = [f"{a:.3g}–{b:.3g}" for a, b in zip(edges[:-1], edges[1:])]
        key = pd.cut(key, edges, include_lowest=True, labels=labels).astype(str)
    key = key.astype(object).where(t[param].notna(), "<n/a>").rename(param)
    ok = t["best_val_acc"].where(t["status"].isin(RANKED_STATUSES))
    grouped = ok.groupby(key, sort=True, dropna=False)
    out = pd.DataFrame({"best": grouped.max(), "mean": grouped.mean(), "trials": t.groupby(key, dropna=False).size()})
    counts = pd.crosstab(key, t["status"]).reindex(columns=list(STATUSES), fill_value=0)
    return out.join(counts).fillna({s: 0 for s in counts.columns}).sort_values("best", ascending=False, na_position="last")


def measure_load_seconds(n_trials: int = 10_000, epochs: int = 10, directory: str | Path | None = None) -> float:
    """Write a synthetic search through the real sink (one flush per trial end) and time ``load_results``.

    Returns:
        Seconds for one ``load_results`` call on ``n_trials`` trials × ``epochs`` epochs.
    """
    import tempfile

    from tune_tl.store.results import ParquetSink

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        _write_synthetic(ParquetSink(tmp, max_epochs=epochs, flush_rows=10**9, flush_seconds=1e9), n_trials, epochs)
        start = time.perf_counter()
        res = load_results(tmp)
        seconds = time.perf_counter() - start
        assert len(res.trials) == n_trials and len(res.epochs) == n_trials * epochs, "synthetic search did not read back"
    return seconds


def _write_synthetic(sink, n_trials: int, epochs: int) -> None:
    import random
    from types import SimpleNamespace

    rng = random.Random(0)
    for i in range(n_trials):
        trial = SimpleNamespace(trial_id=f"t{i:06d}", config={"lr": 10 ** rng.uniform(-4, -1), "freeze_blocks": rng.randint(0, 9)},
                                error_file=None)
        sink.on_trial_start(0, [], trial)
        for e in range(1, epochs + 1):
            sink.on_trial_result(0, [], trial, {"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "val_acc": rng.random(),
                                                "scheduled_lr": 0.01, "epoch_seconds": 1.0, "trainable_params": 1000, "diverged": False})
        sink.on_trial_complete(0, [], trial)
    sink.on_experiment_end([])
