"""``tune-tl report DIR``: a leaderboard on the terminal, PNG plots and one static HTML page.

Works on a running search (it reads whatever parts exist) and on one with no trials yet. Plots are
written next to the results, under ``<DIR>/report/``; for a search on an object store (``s3://``,
``gs://``) into ``./<name>-report/`` on this machine, where a browser can open them:

    >>> paths = write_report("results/demo")   # doctest: +SKIP
    >>> sorted(p.name for p in paths)
    ['accuracy_vs_freeze.png', 'accuracy_vs_lr.png', 'anytime.png', 'importances.png', 'index.html', 'learning_curves.png']
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from tune_tl.analysis.frame import RANKED_STATUSES, Results, leaderboard, load_results
from tune_tl.config.params import PARAMS
from tune_tl.store.search_run import SearchRun

STATUS_COLOURS = {"completed": "tab:green", "pruned": "tab:orange", "diverged": "tab:red", "error": "tab:gray",
                  "running": "tab:blue"}
SHOWN = ["trial_id", "status", "best_val_acc", "best_epoch", "epochs_run"]
MIN_TRIALS_FOR_IMPORTANCE = 5


def write_report(path: str | Path, top: int = 10) -> tuple[str, list[Path]]:
    """Read the search in ``path``, write plots and ``index.html``; return (leaderboard text, files)."""
    run = SearchRun.open(path)
    res = load_results(run)
    out = run.report_dir()
    out.mkdir(exist_ok=True)
    board = leaderboard(res, top=top)
    table = format_leaderboard(board, res)
    notes: list[str] = []
    files = [_learning_curves(res, out / "learning_curves.png"),
             _anytime(res, out / "anytime.png"),
             _accuracy_by_freeze(res, out / "accuracy_vs_freeze.png"),
             _accuracy_vs_lr(res, out / "accuracy_vs_lr.png"),
             _importances(res, out / "importances.png", notes)]
    files = [f for f in files if f is not None]
    files.append(_html(res, board, files, notes, out / "index.html"))
    return table + ("\n" + "\n".join(notes) if notes else ""), files


def format_leaderboard(board: pd.DataFrame, res: Results) -> str:
    """The leaderboard as fixed-width text: result columns, then the parameters that vary."""
    running = len(set(res.epochs["trial_id"]) - set(res.trials["trial_id"]))
    head = f"{len(res.trials)} finished trial(s)" + (f", {running} running" if running > 0 else "")
    if board.empty:
        return head + ": no trial has finished yet."
    return head + "\n" + board[SHOWN + key_params(res.trials)].to_string(float_format=lambda v: f"{v:.4g}")


def key_params(trials: pd.DataFrame) -> list[str]:
    """Parameter columns whose value differs between trials (the ones worth showing)."""
    return [c for c in trials.columns if c in PARAMS and trials[c].nunique(dropna=False) > 1]


def asha_rungs(search: dict) -> list[int]:
    """ASHA's rung epochs, grace_period × reduction_factor^k below max_epochs (from search.json)."""
    budget = search.get("budget") or {}
    grace, factor, top = budget.get("grace_period"), budget.get("reduction_factor"), budget.get("max_epochs")
    if not (grace and factor and top) or factor <= 1:
        return []
    rungs, r = [], float(grace)
    while r < top:
        rungs.append(int(r))
        r *= factor
    return rungs


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _learning_curves(res: Results, file: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    status = res.trials.set_index("trial_id")["status"]
    for trial_id, rows in res.epochs.sort_values("epoch").groupby("trial_id"):
        s = status.get(trial_id, "running")
        ax.plot(rows["epoch"], rows["val_acc"], color=STATUS_COLOURS.get(s, "black"), alpha=0.7, marker=".", lw=1)
    for rung in asha_rungs(res.search):
        ax.axvline(rung, color="black", ls=":", lw=1)
    for s, colour in STATUS_COLOURS.items():
        ax.plot([], [], color=colour, label=s)
    ax.plot([], [], color="black", ls=":", label="ASHA rung")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="Learning curves")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, file)


def anytime_curve(res: Results) -> pd.DataFrame:
    """Best validation accuracy reached so far (any trial, any epoch) against minutes since the search
    started (``search.json``'s ``start_time``, else the first epoch's start): how good the search was
    at every moment, the curve to compare searches and schedulers by. One row per epoch, in time order;
    ``improved`` marks the epochs that set a new best."""
    e = res.epochs[res.epochs["val_acc"].notna() & res.epochs["time"].notna()].sort_values("time")
    if e.empty:
        return pd.DataFrame({"minutes": [], "best_val_acc": [], "trial_id": [], "improved": []})
    first = (e["time"] - pd.to_timedelta(e["epoch_seconds"].fillna(0), unit="s")).min()
    start = pd.to_datetime(res.search.get("start_time"), format="%Y-%m-%dT%H:%M:%S%z", errors="coerce")
    start = start if pd.notna(start) and start <= first else first
    best = e["val_acc"].cummax()
    return pd.DataFrame({"minutes": ((e["time"] - start).dt.total_seconds() / 60).to_numpy(), "best_val_acc": best.to_numpy(),
                         "trial_id": e["trial_id"].to_numpy(), "improved": (best > best.shift(fill_value=-1.0)).to_numpy()})


def _anytime(res: Results, file: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    curve = anytime_curve(res)
    if len(curve):
        ax.step(curve["minutes"], curve["best_val_acc"], where="post", color="tab:green", lw=2)
        new = curve[curve["improved"]]
        ax.scatter(new["minutes"], new["best_val_acc"], color="tab:green", s=18, zorder=3, label="an epoch that set a new best")
        last = curve.iloc[-1]
        ax.annotate(f"{last['best_val_acc']:.4f}", (last["minutes"], last["best_val_acc"]), textcoords="offset points",
                    xytext=(-4, 6), ha="right", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")  # the curve rises to the right: that corner stays empty
    else:
        ax.text(0.5, 0.5, "no epoch finished yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(left=0)
    ax.set(xlabel="wall time since the search started (minutes)", ylabel="best validation accuracy so far",
           title="Anytime performance")
    return _save(fig, file)


def _accuracy_by_freeze(res: Results, file: Path) -> Path:
    plt = _plt()
    ok = res.trials[res.trials["status"].isin(RANKED_STATUSES)]
    columns = [c for c in ("freeze_blocks", "freeze_policy") if c in ok.columns and ok[c].notna().any()]
    fig, axes = plt.subplots(1, max(len(columns), 1), figsize=(5 * max(len(columns), 1), 4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        best = ok.groupby(column)["best_val_acc"].max()
        ax.bar([str(v) for v in best.index], best.values, color="tab:green")
        ax.scatter(ok[column].astype(str), ok["best_val_acc"], color="black", s=10, zorder=3, label="trials")
        ax.set(xlabel=column, ylabel="best val accuracy", title=f"Best accuracy by {column}")
    if not columns:
        axes[0][0].text(0.5, 0.5, "no finished trials yet", ha="center", va="center")
    return _save(fig, file)


def _accuracy_vs_lr(res: Results, file: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    t = res.trials[res.trials["lr"].notna() & res.trials["best_val_acc"].notna()]
    for s, rows in t.groupby("status"):
        ax.scatter(rows["lr"], rows["best_val_acc"], color=STATUS_COLOURS.get(s, "black"), label=s, s=20)
    if len(t):
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    ax.set(xlabel="learning rate (log)", ylabel="best val accuracy", title="Accuracy vs learning rate")
    return _save(fig, file)


def parameter_importances(trials: pd.DataFrame) -> dict[str, float] | None:
    """Optuna (fANOVA) importances of the varying parameters for ``best_val_acc``; None if too few trials."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    ok = trials[trials["status"].isin(RANKED_STATUSES) & trials["best_val_acc"].notna()]
    if len(ok) < MIN_TRIALS_FOR_IMPORTANCE:
        return None
    dists = {}
    for name in key_params(ok):
        values = ok[name].dropna()
        if values.nunique() < 2:
            continue
        if PARAMS[name].type is str:
            dists[name] = CategoricalDistribution(sorted(values.unique()))
        elif PARAMS[name].type is int:
            dists[name] = IntDistribution(int(values.min()), int(values.max()))
        else:
            low, high = float(values.min()), float(values.max())
            dists[name] = FloatDistribution(low, high, log=low > 0 and high / low > 100)
    if not dists:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for _, row in ok.iterrows():
        params = {n: PARAMS[n].type(row[n]) for n in dists if pd.notna(row[n])}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={n: dists[n] for n in params},
                                                  value=float(row["best_val_acc"])))
    try:
        return optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):  # e.g. no parameter present in every trial
        return None


def _importances(res: Results, file: Path, notes: list[str]) -> Path | None:
    importances = parameter_importances(res.trials)
    if importances is None:
        notes.append(f"Parameter importances skipped: they need at least {MIN_TRIALS_FOR_IMPORTANCE} completed or "
                     "pruned trials with a varying parameter.")
        file.unlink(missing_ok=True)
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(importances) + 1.5))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set(xlabel="importance (Optuna fANOVA)", title="Parameter importances for best val accuracy")
    return _save(fig, file)


def _save(fig, file: Path) -> Path:
    fig.tight_layout()
    tmp = file.with_name(f".{file.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    _plt().close(fig)
    tmp.replace(file)
    return file


def _html(res: Results, board: pd.DataFrame, plots: list[Path], notes: list[str], file: Path) -> Path:
    name = html.escape(str(res.search.get("name", file.parent.parent.name)))
    table = board[SHOWN + key_params(res.trials)].reset_index().to_html(float_format=lambda v: f"{v:.4g}", na_rep="", border=0, index=False) \
        if not board.empty else "<p>No trial has finished yet.</p>"
    meta = {k: res.search.get(k) for k in ("start_time", "end_time", "seed", "host") if res.search.get(k) is not None}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tune_tl report: {name}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
             # Plots at their own size (readable labels), side by side where the window is wide enough.
             ".plots{display:flex;flex-wrap:wrap;gap:8px}.plots img{max-width:100%;height:auto}</style>",
             f"</head><body><h1>Search {name}</h1>",
             "<p>" + ", ".join(f"{k}: {html.escape(str(v))}" for k, v in meta.items()) + "</p>",
             f"<p>{len(res.trials)} finished trial(s); {res.epochs['trial_id'].nunique()} with results.</p>",
             "<h2>Leaderboard</h2>", "<div style='overflow-x:auto'>", table, "</div>", "<h2>Plots</h2>",
             "<div class='plots'>", *[f"<img src='{html.escape(p.name)}' alt='{html.escape(p.stem)}'>" for p in plots], "</div>",
             *[f"<p><em>{html.escape(n)}</em></p>" for n in notes], "</body></html>"]
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(file)
    return file
