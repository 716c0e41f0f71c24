"""The report's figures, one function each: results in, a ``Figure`` (or ``None``: nothing worth drawing) out.

Every figure shares :mod:`tune_tl.analysis.figure_style` (fonts, width, colours, accuracy axes zoomed to the
data). A per-parameter figure is drawn only for parameters that varied: one bar for the one freeze policy
searched says nothing. ``write_report`` names the files and saves them.

    >>> fig = learning_curves(load_results("results/demo"), rungs)   # doctest: +SKIP
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tune_tl.analysis.figure_style import HEIGHT, STATUS_COLOURS, accuracy_axis, log_x_axis, new_figure, styled
from tune_tl.analysis.frame import Results
from tune_tl.analysis.importances import Importances
from tune_tl.analysis.rungs import Rungs
from tune_tl.config.params import PARAMS
from tune_tl.store.ranking import RANKED_STATUSES
from tune_tl.store.search_run import SearchRun

#: The parameters of the freeze figure, one panel each (if it varied).
FREEZE_PARAMS = ("freeze_blocks", "freeze_policy")


def _ranked(res: Results) -> pd.DataFrame:
    """Trials whose ``best_val_acc`` is a comparable measurement."""
    return res.trials[res.trials["status"].isin(RANKED_STATUSES) & res.trials["best_val_acc"].notna()]


def _by_status(ax, points: pd.DataFrame, x: str) -> None:
    for s, rows in points.groupby("status"):
        ax.scatter(rows[x], rows["best_val_acc"], color=STATUS_COLOURS.get(s, "black"), label=s, s=20)


@styled
def learning_curves(res: Results, rungs: Rungs) -> Figure:
    """Val accuracy per trial against what the scheduler compares trials at (epochs, or cost-aware ASHA's predicted
    cost), with the rungs the scheduler used (dotted, ``gid="rung"``). On the cost clock a trial still running (no
    config in the trials table yet) is drawn once it has finished."""
    fig, (ax,) = new_figure()
    status = res.trials.set_index("trial_id")["status"]
    positions = rungs.positions(res.trials, res.epochs)
    seen = set()
    for trial_id, rows in res.epochs.sort_values("epoch").groupby("trial_id"):
        x = positions.loc[rows.index]
        if x.isna().all():
            continue
        s = status.get(trial_id, "running")
        seen.add(s)
        ax.plot(x, rows["val_acc"], color=STATUS_COLOURS.get(s, "black"), alpha=0.7, marker=".", lw=1)
    for rung in rungs.milestones:
        ax.axvline(rung, color="black", ls=":", lw=1, gid="rung")
    for s, colour in STATUS_COLOURS.items():
        if s in seen:
            ax.plot([], [], color=colour, label=s)
    if rungs.milestones:
        ax.plot([], [], color="black", ls=":", label=rungs.label)
    if rungs.clock == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:  # a cached head-only epoch costs a thousandth of a fine-tune epoch: log, linear near 0 so 0 fits
        log_x_axis(ax, linear_below=1.0 if rungs.clock == "seconds" else 0.01)
    ax.set(xlabel=rungs.axis_label, title="Learning curves")
    accuracy_axis(ax, res.epochs["val_acc"], "validation accuracy")
    if seen:
        ax.legend(loc="best")
    return fig


def anytime_curve(res: Results) -> pd.DataFrame:
    """Best validation accuracy reached so far (any trial, any epoch) against minutes since the search
    started (``search.json``'s ``start_time``, else the first epoch's start): how good the search was
    at every moment, the curve to compare searches and schedulers by. One row per epoch, in time order;
    ``improved`` marks the epochs that set a new best."""
    e = res.epochs[res.epochs["val_acc"].notna() & res.epochs["time"].notna()].sort_values("time")
    if e.empty:
        return pd.DataFrame({"minutes": [], "best_val_acc": [], "trial_id": [], "improved": []})
    first = (e["time"] - pd.to_timedelta(e["epoch_seconds"].fillna(0), unit="s")).min()
    start = SearchRun.start_time_in(res.search)
    start = start if start is not None and start <= first else first
    best = e["val_acc"].cummax()
    return pd.DataFrame({"minutes": ((e["time"] - start).dt.total_seconds() / 60).to_numpy(), "best_val_acc": best.to_numpy(),
                         "trial_id": e["trial_id"].to_numpy(), "improved": (best > best.shift(fill_value=-1.0)).to_numpy()})


@styled
def anytime(res: Results) -> Figure:
    """The anytime curve (:func:`anytime_curve`) as a step plot, the epochs that set a new best marked."""
    fig, (ax,) = new_figure()
    curve = anytime_curve(res)
    if len(curve):
        ax.step(curve["minutes"], curve["best_val_acc"], where="post", color="tab:green", lw=2)
        new = curve[curve["improved"]]
        ax.scatter(new["minutes"], new["best_val_acc"], color="tab:green", s=18, zorder=3, label="an epoch that set a new best")
        last = curve.iloc[-1]
        ax.annotate(f"{last['best_val_acc']:.4f}", (last["minutes"], last["best_val_acc"]), textcoords="offset points",
                    xytext=(-4, 6), ha="right")
        ax.legend(loc="lower right")  # a running best is high on the right: that corner stays empty
    else:
        ax.text(0.5, 0.5, "no epoch finished yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(left=0)
    ax.set(xlabel="wall time since the search started (minutes)", title="Anytime performance")
    accuracy_axis(ax, curve["best_val_acc"], "best validation accuracy so far")
    return fig


@styled
def accuracy_by_freeze(res: Results) -> Figure | None:
    """Per freeze parameter that varied, each trial's best val accuracy and the best per value; ``None`` if none varied."""
    ok = _ranked(res)
    columns = [c for c in FREEZE_PARAMS if c in ok.columns and ok[c].nunique() > 1]
    if not columns:
        return None
    fig, axes = new_figure(len(columns), sharey=True)
    for ax, column in zip(axes, columns, strict=False):
        rows = ok[ok[column].notna()]
        label = (lambda v: str(int(v))) if PARAMS[column].type is int else str  # 6, not 6.0 beside missing values
        best = rows.groupby(column)["best_val_acc"].max()  # drawn first: its sorted values set the category order
        ax.scatter([label(v) for v in best.index], best.values, marker="_", s=500, linewidths=3, color="tab:green", zorder=4,
                   label="best")
        ax.scatter(rows[column].map(label), rows["best_val_acc"], color="black", s=10, alpha=0.6, zorder=3, label="a trial")
        ax.set_xlim(-0.5, len(best) - 0.5)  # whole markers at the first and last value
        ax.set_xlabel(column)
    fig.suptitle(f"Best accuracy by {' and '.join(columns)}")
    accuracy_axis(axes[0], ok["best_val_acc"], "best val accuracy")
    axes[0].legend(loc="best")
    return fig


@styled
def accuracy_vs_lr(res: Results) -> Figure | None:
    """Best val accuracy against the learning rate (log), by status; ``None`` if the learning rate did not vary."""
    if "lr" not in res.trials:
        return None
    t = res.trials[res.trials["lr"].notna() & res.trials["best_val_acc"].notna()]
    if t["lr"].nunique() < 2:
        return None
    fig, (ax,) = new_figure()
    _by_status(ax, t, "lr")
    log_x_axis(ax)
    ax.legend(loc="best")
    ax.set(xlabel="learning rate (log)", title="Accuracy vs learning rate")
    accuracy_axis(ax, t["best_val_acc"], "best val accuracy")
    return fig


@styled
def importances_plot(importances: Importances | None) -> Figure | None:
    """fANOVA importances as bars with their spread over seeds; ``None`` when there are none."""
    if importances is None:
        return None
    fig, (ax,) = new_figure(height=max(HEIGHT, 0.35 * len(importances.mean) + 1.4))
    names = list(importances.mean)[::-1]
    ax.barh(names, [importances.mean[n] for n in names], xerr=[importances.sd[n] for n in names], color="tab:blue", capsize=3)
    ax.set_xlim(left=0)
    at = f"at epoch {importances.epoch}" if importances.epoch else "completed trials"
    ax.set(xlabel="importance for val accuracy (fANOVA, mean ± sd over seeds)",
           title=f"Parameter importances ({importances.trials} trials, {at})")
    return fig


def pareto_front(points: pd.DataFrame, cost: str, value: str = "best_val_acc") -> pd.DataFrame:
    """The rows no other row beats on both counts (lower ``cost``, higher ``value``), cheapest first."""
    front, best = [], float("-inf")
    for _, row in points.sort_values([cost, value], ascending=[True, False]).iterrows():
        if row[value] > best:
            front.append(row)
            best = row[value]
    return pd.DataFrame(front)


@styled
def pareto(res: Results) -> Figure:
    """Val accuracy against trainable parameters (what a trial fine-tunes), the Pareto front marked."""
    fig, (ax,) = new_figure()
    ok = _ranked(res)
    params = res.epochs.groupby("trial_id")["trainable_params"].max()
    points = ok.assign(trainable_params=ok["trial_id"].map(params)).dropna(subset=["trainable_params"])
    _by_status(ax, points, "trainable_params")
    if len(points):
        front = pareto_front(points, "trainable_params")
        ax.step(front["trainable_params"], front["best_val_acc"], where="post", color="black", lw=1)
        ax.scatter(front["trainable_params"], front["best_val_acc"], facecolors="none", edgecolors="black", s=80, label="Pareto front")
        log_x_axis(ax)
        ax.legend(loc="best")
    ax.set(xlabel="trainable parameters (log)", title="Accuracy vs cost")
    accuracy_axis(ax, points["best_val_acc"], "best val accuracy")
    return fig
