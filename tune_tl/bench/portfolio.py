"""Does choosing the backbone pay, and do the cheap rankings know which one to choose?

    python -m tune_tl.bench portfolio            # digits at 64 px; about 25 minutes on 2 CPU cores
    python -m tune_tl.bench portfolio --quick    # shorter searches and fine-tunes

In one run, on the same machine and data (digits at 64 px unless ``--space``/``--resolution`` say otherwise):

1. ``tune-tl rank`` over the bundled portfolio (Lite0, Lite1, Lite2): LogME, linear-probe accuracy,
   feature seconds, parameter count;
2. one textbook fine-tune of each backbone (whole model, AdamW 1e-3, linear head): its fine-tuned accuracy;
3. Kendall τ between each cheap signal (LogME, probe accuracy, and model size, the baseline later work
   found strong) and the fine-tuned accuracy;
4. three searches with the same ``--time-budget``: the portfolio space (``search_spaces/portfolio.yaml``,
   the backbone a choice), the same with ``backbone_selection: {top: 1}`` (the search ranks the
   backbones by LogME first and keeps the best), and the same space with Lite0 only.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

from tune_tl.analysis.frame import load_results
from tune_tl.bench.suite import at_resolution, fixed_spec, machine, plain_fit, search_figures
from tune_tl.config import BackboneSpec, SearchSpec, SelectionSpec, load_space
from tune_tl.search.rank import RankOptions, rank_backbones
from tune_tl.search.session import init_ray

PORTFOLIO_SPACE = "portfolio"  # a shipped space (tune_tl/search_spaces/portfolio.yaml)
SIGNALS = ("logme", "probe_acc", "params")


def only(spec: SearchSpec, backbone: str) -> SearchSpec:
    """The same space with one backbone."""
    return dataclasses.replace(spec, backbone=BackboneSpec(backbone, spec.backbone.weights))


def fine_tune(spec: SearchSpec, backbone: str, epochs: int, resolution: int, **params) -> tuple[float, float]:
    """(best val acc, seconds) of the textbook fine-tune of ``backbone`` in a plain loop with every CPU thread;
    ``params`` adds to the recipe (e.g. ``aug_flip=1``)."""
    import torch


    torch.set_num_threads(os.cpu_count() or 1)
    fixed = dataclasses.replace(fixed_spec(spec, epochs, resolution=resolution, lr=1e-3, **params), data=spec.data,
                                backbone=BackboneSpec(backbone, spec.backbone.weights))
    start = time.time()
    history, _ = plain_fit(fixed, "cpu")
    return max(h.val_acc for h in history), time.time() - start


def kendall(table, signal: str, target: str = "fine_tuned_acc") -> float:
    """Kendall's τ-b between ``signal`` and ``target`` over the backbones (1 = the same order)."""
    from scipy.stats import kendalltau

    return float(kendalltau(table[signal], table[target]).statistic)


def run_portfolio(spec: SearchSpec, out: Path, resolution: int, epochs: int, budget: float) -> tuple:
    """The ranking joined with fine-tuned accuracy, the τ per signal, and the three searches' figures."""

    spec = at_resolution(spec, resolution)
    table = rank_backbones(spec, RankOptions(resolution=resolution))
    print(f"ranked:\n{table.to_string(index=False)}", flush=True)
    tuned = {name: fine_tune(spec, name, epochs, resolution) for name in table["backbone"]}
    for name, (acc, seconds) in tuned.items():
        print(f"fine-tuned {name}: {100 * acc:.1f} % in {seconds:.0f} s", flush=True)
    table = table.assign(fine_tuned_acc=[tuned[n][0] for n in table["backbone"]],
                         fine_tune_seconds=[tuned[n][1] for n in table["backbone"]])
    taus = {signal: kendall(table, signal) for signal in SIGNALS}

    timed = dataclasses.replace(spec, budget=dataclasses.replace(spec.budget, samples=200, time=budget))
    searches = {}
    ranked = dataclasses.replace(timed, backbone_selection=SelectionSpec(top=1, by="logme"))
    for name, label, s in (("portfolio", "portfolio (Lite0/1/2)", timed),
                           ("portfolio-top1", "portfolio, `backbone_selection: {top: 1}` (LogME)", ranked),
                           ("lite0", "Lite0 only", only(timed, spec.backbone.names[0]))):
        f = search_figures(s, out, name)
        trials = load_results(out / name).trials
        f["per_backbone"] = trials.groupby("backbone")["best_val_acc"].agg(["count", "max"]).to_dict("index")
        searches[label] = f
        print(f"searched {label}: best {100 * f['best']:.1f} % in {f['wall']:.0f} s", flush=True)
    return table, taus, searches


def print_portfolio(table, taus: dict, searches: dict, resolution: int, epochs: int, budget: float) -> None:
    print(f"\nBackbones on digits at {resolution} px (fine-tune: whole model, AdamW 1e-3, linear head, {epochs} epochs):\n")
    print("| backbone | LogME | probe acc | params | feature s | fine-tuned acc | fine-tune s |\n|---|---|---|---|---|---|---|")
    for r in table.itertuples():
        print(f"| {r.backbone} | {r.logme:.4f} | {100 * r.probe_acc:.1f} % | {r.params / 1e6:.1f} M | {r.seconds:.1f} | "
              f"{100 * r.fine_tuned_acc:.1f} % | {r.fine_tune_seconds:.0f} |")
    print("\nKendall τ with the fine-tuned accuracy: " + " · ".join(f"{s} {t:+.2f}" for s, t in taus.items()))
    print(f"\nSearches with --time-budget {budget:.0f} (the portfolio space, {resolution} px):\n")
    print("| search | best val acc | wall | trials | best first reached after | per backbone: trials, best |\n|---|---|---|---|---|---|")
    for label, f in searches.items():
        per = "; ".join(f"{b}: {v['count']}, {100 * v['max']:.1f} %" for b, v in f["per_backbone"].items())
        trials = sum(v["count"] for v in f["per_backbone"].values())
        print(f"| {label} | {100 * f['best']:.1f} % | {f['wall']:.0f} s | {trials} | {f['to_best']:.0f} s | {per} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tune_tl.bench portfolio", description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", metavar="FILE", default=str(PORTFOLIO_SPACE), help="a space whose backbone.name lists the candidates")
    parser.add_argument("--resolution", type=int, default=64, help="input side in pixels (default 64)")
    parser.add_argument("--epochs", type=int, help="epochs of each fine-tune (default: the space's max_epochs)")
    parser.add_argument("--time-budget", type=float, default=300, help="seconds each search may run (default 300)")
    parser.add_argument("--quick", action="store_true", help="2-epoch fine-tunes and 90-second searches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    spec = load_space(args.space)
    epochs = 2 if args.quick else args.epochs or spec.budget.max_epochs
    budget = 90 if args.quick else args.time_budget
    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        table, taus, searches = run_portfolio(spec, Path(tmp), args.resolution, epochs, budget)
    print(f"\nMachine: {machine()}")
    print_portfolio(table, taus, searches, args.resolution, epochs, budget)
