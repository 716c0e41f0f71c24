"""``tune-tl report DIR``: a leaderboard on the terminal, PNG plots and one static HTML page.

Works on a running search (it reads whatever parts exist) and on one with no trials yet. Plots are
written next to the results, under ``<DIR>/report/``; for a search on an object store (``s3://``,
``gs://``) into ``./<name>-report/`` on this machine, where a browser can open them:

    >>> paths = write_report("results/demo")   # doctest: +SKIP
    >>> sorted(p.name for p in paths)
    ['accuracy_vs_freeze.png', 'accuracy_vs_lr.png', 'anytime.png', 'importances.png', 'index.html', 'learning_curves.png', 'pareto.png']
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tune_tl.analysis.frame import RANKED_STATUSES, Results, leaderboard, load_results
from tune_tl.config.params import PARAMS
from tune_tl.store.schema import STATUSES
from tune_tl.store.search_run import SearchRun

STATUS_COLOURS = {"completed": "tab:green", "pruned": "tab:orange", "diverged": "tab:red", "oom": "tab:purple",
                  "error": "tab:gray", "running": "tab:blue"}
assert set(STATUS_COLOURS) == set(STATUSES) | {"running"}, "one status vocabulary (tune_tl.store.schema.STATUSES)"
SHOWN = ["trial_id", "status", "best_val_acc", "best_epoch", "epochs_run"]
MIN_TRIALS_FOR_IMPORTANCE = 5
#: Below this many trials importances get a plain warning (at 16 trials an image-folder run ranked head_hidden first).
FEW_TRIALS_FOR_IMPORTANCE = 30


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
             _importances(res, out / "importances.png", notes),
             _pareto(res, out / "pareto.png")]
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


def cost_asha_rungs(search: dict, epochs: pd.DataFrame) -> list[float]:
    """Cost-aware ASHA's rungs in training seconds. The unit is its first trial's first epoch, read back
    from the epochs table (the earliest recorded epoch), as ``tune-tl resume`` does without ``scheduler.json``."""
    from tune_tl.search.cost_asha import cost_rungs

    budget = search.get("budget") or {}
    grace, factor, top = budget.get("grace_period"), budget.get("reduction_factor"), budget.get("max_epochs")
    if not (grace and factor and top) or factor <= 1 or not len(epochs):
        return []
    first = epochs.sort_values([c for c in ("time", "epoch") if c in epochs.columns], kind="stable")["epoch_seconds"].iloc[0]
    return cost_rungs(max(float(first), 1e-6), grace, top, factor)


def _scheduler(search: dict) -> str:
    return (search.get("options") or {}).get("scheduler") or "asha"


def _learning_curves(res: Results, file: Path) -> Path:
    """Val accuracy per trial against what the scheduler compares trials at: epochs, or (cost-aware ASHA)
    cumulative training seconds, with the rungs where trials were stopped."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    status = res.trials.set_index("trial_id")["status"]
    scheduler = _scheduler(res.search)
    by_seconds = scheduler == "cost-asha" and "epoch_seconds" in res.epochs.columns
    for trial_id, rows in res.epochs.sort_values("epoch").groupby("trial_id"):
        s = status.get(trial_id, "running")
        x = rows["epoch_seconds"].cumsum() if by_seconds else rows["epoch"]
        ax.plot(x, rows["val_acc"], color=STATUS_COLOURS.get(s, "black"), alpha=0.7, marker=".", lw=1)
    rungs = [] if scheduler == "fifo" else cost_asha_rungs(res.search, res.epochs) if by_seconds else asha_rungs(res.search)
    for rung in rungs:
        ax.axvline(rung, color="black", ls=":", lw=1)
    for s, colour in STATUS_COLOURS.items():
        ax.plot([], [], color=colour, label=s)
    if rungs:
        ax.plot([], [], color="black", ls=":", label="cost-aware ASHA rung" if by_seconds else "ASHA rung")
    from matplotlib.ticker import MaxNLocator

    if by_seconds:
        ax.set_xscale("symlog", linthresh=1.0)  # head-only epochs take ~0.1 s, fine-tune epochs tens of seconds
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="training seconds (the cost-aware scheduler's clock)" if by_seconds else "epoch",
           ylabel="validation accuracy", title="Learning curves")
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


@dataclass(frozen=True)
class Importances:
    """fANOVA importances with their spread, and the budget they compare trials at."""

    mean: dict[str, float]
    sd: dict[str, float]
    trials: int
    #: Epoch at which every included trial is scored (its best val_acc up to then); ``None``: full runs.
    epoch: int | None


def same_budget_scores(trials: pd.DataFrame, epochs: pd.DataFrame, min_trials: int = MIN_TRIALS_FOR_IMPORTANCE) -> tuple[pd.DataFrame, int | None]:
    """Trials scored at one budget: the deepest epoch that at least ``min_trials`` comparable trials reached,
    each scored by its best val_acc up to that epoch (a pruned trial's partial score is never set beside
    a finished trial's final one)."""
    ok = trials[trials["status"].isin(RANKED_STATUSES)]
    e = epochs[epochs["trial_id"].isin(ok["trial_id"])]
    if e.empty:
        return ok.iloc[:0].assign(score=[]), None
    reached = e.groupby("trial_id")["epoch"].max()
    depths = sorted(reached.unique(), reverse=True)
    epoch = next((int(d) for d in depths if (reached >= d).sum() >= min_trials), int(depths[-1]))
    ids = reached[reached >= epoch].index
    score = e[e["trial_id"].isin(ids) & (e["epoch"] <= epoch)].groupby("trial_id")["val_acc"].max()
    return ok[ok["trial_id"].isin(ids)].assign(score=ok["trial_id"].map(score)), epoch


def parameter_importances(trials: pd.DataFrame, epochs: pd.DataFrame | None = None, seeds: int = 5) -> Importances | None:
    """Optuna fANOVA importances of the varying parameters, mean and sd over ``seeds`` forests.

    Trials are compared at the same budget (``same_budget_scores``); without ``epochs``, only completed
    trials (the full budget) count. ``None`` with fewer than ``MIN_TRIALS_FOR_IMPORTANCE`` trials.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.importance import FanovaImportanceEvaluator

    if epochs is None:
        ok, epoch = trials[(trials["status"] == "completed") & trials["best_val_acc"].notna()].assign(score=trials["best_val_acc"]), None
    else:
        ok, epoch = same_budget_scores(trials, epochs)
    ok = ok[ok["score"].notna()]
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
        study.add_trial(optuna.trial.create_trial(params=params, distributions={n: dists[n] for n in params}, value=float(row["score"])))
    try:
        runs = pd.DataFrame([optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
                             for seed in range(seeds)]).fillna(0.0)
    except (ValueError, RuntimeError):  # e.g. no parameter present in every trial
        return None
    order = runs.mean().sort_values(ascending=False).index
    return Importances({n: float(runs[n].mean()) for n in order}, {n: float(runs[n].std(ddof=0)) for n in order}, len(ok), epoch)


def _importances(res: Results, file: Path, notes: list[str]) -> Path | None:
    importances = parameter_importances(res.trials, res.epochs)
    if importances is None:
        notes.append(f"Parameter importances skipped: they need at least {MIN_TRIALS_FOR_IMPORTANCE} completed or "
                     "pruned trials, compared at the same epoch, with a varying parameter.")
        file.unlink(missing_ok=True)
        return None
    if importances.trials < FEW_TRIALS_FOR_IMPORTANCE:
        notes.append(f"Warning: parameter importances come from only {importances.trials} trials (compared at epoch "
                     f"{importances.epoch}); with fewer than {FEW_TRIALS_FOR_IMPORTANCE} they are mostly noise: read the "
                     "error bars (spread over fANOVA seeds) before trusting the order.")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(importances.mean) + 1.5))
    names = list(importances.mean)[::-1]
    ax.barh(names, [importances.mean[n] for n in names], xerr=[importances.sd[n] for n in names], color="tab:blue", capsize=3)
    at = f"at epoch {importances.epoch}" if importances.epoch else "completed trials"
    ax.set(xlabel="importance (Optuna fANOVA, mean ± sd over seeds)",
           title=f"Parameter importances for val accuracy ({importances.trials} trials, {at})")
    return _save(fig, file)


def pareto_front(points: pd.DataFrame, cost: str, value: str = "best_val_acc") -> pd.DataFrame:
    """The rows no other row beats on both counts (lower ``cost``, higher ``value``), cheapest first."""
    front, best = [], float("-inf")
    for _, row in points.sort_values([cost, value], ascending=[True, False]).iterrows():
        if row[value] > best:
            front.append(row)
            best = row[value]
    return pd.DataFrame(front)


def _pareto(res: Results, file: Path) -> Path:
    """Val accuracy against trainable parameters (what a trial fine-tunes), the Pareto front marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = res.trials[res.trials["status"].isin(RANKED_STATUSES) & res.trials["best_val_acc"].notna()]
    params = res.epochs.groupby("trial_id")["trainable_params"].max()
    points = ok.assign(trainable_params=ok["trial_id"].map(params)).dropna(subset=["trainable_params"])
    for s, rows in points.groupby("status"):
        ax.scatter(rows["trainable_params"], rows["best_val_acc"], color=STATUS_COLOURS.get(s, "black"), label=s, s=20)
    if len(points):
        front = pareto_front(points, "trainable_params")
        ax.step(front["trainable_params"], front["best_val_acc"], where="post", color="black", lw=1)
        ax.scatter(front["trainable_params"], front["best_val_acc"], facecolors="none", edgecolors="black", s=80, label="Pareto front")
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    ax.set(xlabel="trainable parameters (log)", ylabel="best val accuracy", title="Accuracy vs cost")
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
