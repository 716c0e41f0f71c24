"""Compare schedulers and samplers in seconds, not hours: replay them over recorded curves.

    python -m tune_tl.bench replay                              # every table in tune_tl/bench/curves/
    python -m tune_tl.bench replay --curves digits64.parquet --seeds 20 --workers 1 2 8 64

For each recorded table, worker count, scheduler and sampler, ``--seeds`` simulated searches run
(``tune_tl.bench.sim``); the output is the median best-found val_acc (and its spread over seeds) at
25 %, 50 % and 100 % of the simulated budget, as a markdown table, and optionally the anytime curves
as a PNG. The budget for ``W`` workers is, unless ``--budget-seconds`` fixes it, the time ``W``
perfectly packed workers need to train every recorded config to the end (at least the longest
config's time): by then FIFO has seen everything, so the 25 % and 50 % columns show who finds good
configs early.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler

from tune_tl.bench.curves import CURVES_DIR, read_curves
from tune_tl.bench.replay_samplers import SAMPLERS
from tune_tl.bench.sim import METRIC, Curve, curves_from_table, simulate
from tune_tl.errors import TuneTLError
from tune_tl.search.schedulers import SCHEDULERS as NAMES
from tune_tl.search.schedulers import make_scheduler
from tune_tl.store.storage import private_temp_root

log = logging.getLogger(__name__)

CHECKPOINTS = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Task:
    """A recorded table, ready to replay."""

    name: str
    curves: tuple[Curve, ...]

    @property
    def max_epochs(self) -> int:
        return max(len(c.val_acc) for c in self.curves)

    @property
    def first_epoch_seconds(self) -> float:
        return float(np.median([c.seconds[0] for c in self.curves]))

    def default_budget(self, workers: int) -> float:
        costs = [c.cost for c in self.curves]
        return max(sum(costs) / workers, max(costs))

    @property
    def oracle(self) -> float:
        return max(float(c.val_acc.max()) for c in self.curves)


# ------------------------------------------------------------------ schedulers (real Ray objects)


def _asha(task: Task) -> TrialScheduler:
    """tune_tl's ASHA default: rungs in epochs, grace 1, reduction factor 3."""
    return ASHAScheduler(time_attr="epoch", metric=METRIC, mode="max", max_t=task.max_epochs, grace_period=1, reduction_factor=3)


def _asha_seconds(task: Task) -> TrialScheduler:
    """Cost-aware ASHA: rungs in training seconds (a cheap head-only epoch is not weighed like a full one)."""
    return ASHAScheduler(time_attr="time_total_s", metric=METRIC, mode="max", max_t=max(c.cost for c in task.curves) + 1,
                         grace_period=task.first_epoch_seconds, reduction_factor=3)


def _median(task: Task) -> TrialScheduler:
    """Ray's median stopping rule on training seconds (stop when below the median of running means)."""
    return MedianStoppingRule(time_attr="time_total_s", metric=METRIC, mode="max", grace_period=task.first_epoch_seconds,
                              min_samples_required=3)


#: Scheduler name → factory(task). Add one here and it is replayed.
SCHEDULERS: dict[str, Callable[[Task], TrialScheduler]] = {
    "fifo": lambda task: FIFOScheduler(),
    "asha": _asha,
    "asha-seconds": _asha_seconds,
    "median": _median,
}


def _register_tune_tl_schedulers() -> None:
    """Add the schedulers ``tune-tl search --scheduler`` offers (``tune_tl.search.schedulers.make_scheduler``),
    built for the task's budget with the space file's defaults (grace 1, reduction factor 3)."""
    def factory(name: str) -> Callable[[Task], TrialScheduler]:
        def build(task: Task) -> TrialScheduler:
            budget = SimpleNamespace(max_epochs=task.max_epochs, grace_period=1, reduction_factor=3.0)
            return make_scheduler(name, SimpleNamespace(budget=budget), private_temp_root() / NO_RESULTS)
        return build

    for name in NAMES:
        SCHEDULERS.setdefault(name, factory(name))


#: A results folder that does not exist, in this user's private temporary folder (no one else can plant results
#: there): tune_tl's resumable schedulers find nothing to replay in it.
NO_RESULTS = "replay-no-results"
_register_tune_tl_schedulers()


# ------------------------------------------------------------------ the grid


def load_task(path: str | Path) -> Task:
    table, meta = read_curves(path)
    return Task(meta.get("task", Path(path).stem) + f" ({Path(path).name})", tuple(curves_from_table(table)))


def replay(task: Task, schedulers: list[str], samplers: list[str], workers: list[int], seeds: int,
           budget_seconds: float | None = None, grid_points: int = 101) -> pd.DataFrame:
    """One row per (workers, scheduler, sampler, seed): best-found val_acc on a grid of simulated times."""
    rows = []
    for w in workers:
        budget = budget_seconds or task.default_budget(w)
        grid = np.linspace(0.0, budget, grid_points)
        for sched in schedulers:
            for samp in samplers:
                for seed in range(seeds):
                    trace = simulate(list(task.curves), SCHEDULERS[sched](task), SAMPLERS[samp](list(task.curves), seed), w, budget)
                    rows.append({"task": task.name, "workers": w, "budget": budget, "scheduler": sched, "sampler": samp,
                                 "seed": seed, "curve": trace.best_at(grid), "trials": trace.started, "epochs": trace.epochs,
                                 "stopped": trace.stopped})
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Median (and IQR) over seeds at each checkpoint of the budget."""
    out = []
    for (task, w, sched, samp), group in runs.groupby(["task", "workers", "scheduler", "sampler"], sort=False):
        curves = np.stack(group["curve"].to_list())
        n = curves.shape[1] - 1
        row = {"task": task, "workers": w, "budget": group["budget"].iloc[0], "scheduler": sched, "sampler": samp}
        for frac in CHECKPOINTS:
            col = curves[:, round(frac * n)]
            row[f"{frac:.0%}"] = float(np.median(col))
            row[f"iqr {frac:.0%}"] = (float(np.quantile(col, 0.25)), float(np.quantile(col, 0.75)))
        row["anytime"] = float(np.mean([row[f"{f:.0%}"] for f in CHECKPOINTS]))
        row["trials"] = float(group["trials"].median())
        row["epochs"] = float(group["epochs"].median())
        out.append(row)
    return pd.DataFrame(out)


def best_by_workers(summary: pd.DataFrame, sampler: str = "random") -> dict[int, str]:
    """The scheduler with the highest mean of the 25/50/100 % medians at each worker count (one
    sampler); ties go to the one that trained fewer epochs, and a tie on both names them all."""
    rows = summary[summary["sampler"] == sampler]
    best = {}
    for w, g in rows.groupby("workers"):
        g = g.assign(score=g["anytime"].round(4)).sort_values(["score", "epochs"], ascending=[False, True], kind="stable")
        top = g[(g["score"] == g["score"].iloc[0]) & (g["epochs"] == g["epochs"].iloc[0])]
        best[int(w)] = " = ".join(top["scheduler"])
    return best


def markdown(task: Task, summary: pd.DataFrame, seeds: int) -> str:
    lines = [f"### {task.name}: {len(task.curves)} configs × ≤ {task.max_epochs} epochs, best recorded val_acc {task.oracle:.4f}",
             "",
             f"Median best-found val_acc over {seeds} seeds at 25 / 50 / 100 % of the simulated budget "
             "(0 = no trial had reported yet); IQR at 100 %; trials started and epochs trained (median).",
             "",
             "| workers | budget (sim. s) | scheduler | sampler | 25 % | 50 % | 100 % | IQR 100 % | trials | epochs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary.to_dict("records"):
        lo, hi = r["iqr 100%"]
        lines.append(f"| {r['workers']} | {r['budget']:.0f} | {r['scheduler']} | {r['sampler']} | {r['25%']:.4f} | {r['50%']:.4f} | "
                     f"{r['100%']:.4f} | {lo:.4f}–{hi:.4f} | {r['trials']:.0f} | {r['epochs']:.0f} |")
    for sampler in summary["sampler"].unique():
        best = best_by_workers(summary, sampler)
        lines.append("")
        lines.append(f"Best scheduler with the {sampler} sampler (mean of the three medians; ties: fewer epochs): "
                     + ", ".join(f"{w} workers: **{s}**" for w, s in best.items()))
    return "\n".join(lines)


def plot(runs: pd.DataFrame, path: str | Path) -> None:
    """Anytime curves (median, IQR band): one panel per task and worker count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, workers = runs["task"].unique(), sorted(runs["workers"].unique())
    fig, axes = plt.subplots(len(tasks), len(workers), figsize=(4 * len(workers), 3.2 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j, w in enumerate(workers):
            ax = axes[i][j]
            sub = runs[(runs["task"] == task) & (runs["workers"] == w)]
            scheds, samps = list(runs["scheduler"].unique()), list(runs["sampler"].unique())
            for (sched, samp), group in sub.groupby(["scheduler", "sampler"], sort=False):
                curves = np.stack(group["curve"].to_list())
                x = np.linspace(0, group["budget"].iloc[0], curves.shape[1])
                line, = ax.plot(x, np.median(curves, axis=0), label=f"{sched}/{samp}", lw=1.2, color=f"C{scheds.index(sched)}",
                                linestyle=["-", "--", ":", "-."][samps.index(samp) % 4])
                ax.fill_between(x, np.quantile(curves, 0.25, axis=0), np.quantile(curves, 0.75, axis=0), color=line.get_color(), alpha=0.12)
            ax.set_title(f"{task.split(' (')[0]}, {w} workers", fontsize=9)
            ax.set_xlabel("simulated seconds", fontsize=8)
            ax.set_ylim(max(0.0, float(np.quantile(np.stack(sub['curve'].to_list())[:, 10:], 0.05)) - 0.02), 1.0)
            if j == 0:
                ax.set_ylabel("best val_acc", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tune_tl.bench replay", description=__doc__.splitlines()[0])
    parser.add_argument("--curves", nargs="+", metavar="FILE", help="curve tables (default: every table in tune_tl/bench/curves/)")
    parser.add_argument("--seeds", type=int, default=20, help="simulated searches per cell (default 20)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 8, 64], help="parallel workers (default 1 2 8 64)")
    parser.add_argument("--budget-seconds", type=float, help="simulated budget for every worker count (default: see above)")
    parser.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS), help=f"default: {' '.join(SCHEDULERS)}")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), help=f"default: {' '.join(SAMPLERS)}")
    parser.add_argument("--plot", metavar="PNG", help="also write the anytime curves to this PNG")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        for flag, names, known in (("--schedulers", args.schedulers, SCHEDULERS), ("--samplers", args.samplers, SAMPLERS)):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise TuneTLError(f"{flag}: unknown {unknown}; choose from {sorted(known)}")
        if args.seeds < 1 or any(w < 1 for w in args.workers):
            raise TuneTLError("--seeds and --workers must be at least 1")
        if args.budget_seconds is not None and args.budget_seconds <= 0:
            raise TuneTLError(f"--budget-seconds must be positive, got {args.budget_seconds}")
        paths = args.curves or sorted(str(p) for p in CURVES_DIR.iterdir() if p.name.endswith(".parquet"))
        if not paths:
            raise TuneTLError(f"no curve tables in {CURVES_DIR}; record one with `python -m tune_tl.bench curves` or pass --curves")
        tasks = [load_task(p) for p in paths]
    except TuneTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    all_runs = []
    for task in tasks:
        runs = replay(task, args.schedulers, args.samplers, args.workers, args.seeds, args.budget_seconds)
        all_runs.append(runs)
        print(markdown(task, summarize(runs), args.seeds))
        print()
    if args.plot:
        plot(pd.concat(all_runs, ignore_index=True), args.plot)
        print(f"anytime curves: {args.plot}")
    return 0
