"""The headline benchmark: does the default search beat one textbook fine-tune, and at what wall time?

On digits at 64 px, 16 trials of at most 6 epochs, one after another in one process:

(a) one textbook fine-tune, no search: the whole model, AdamW 1e-3, a linear head, 6 epochs, in a
    plain PyTorch loop using every CPU thread (what a person runs first);
(b) the old default: the old default space (``search_spaces/broad.yaml``), ASHA on epoch rungs,
    Optuna's stock TPE (10 random start-up trials), no textbook start;
(c) the new default: ``tune-tl search`` as shipped (the default space, cost-aware ASHA, textbook
    start, scaled grouped TPE);
(d) the new default given what (a) took, times 2.5, as ``--time-budget``: what a user with that budget gets;
(e) the new scheduler and sampler on the old space: what the space change adds, and what it does not;
(f) optionally, a hand-written Ray Tune + OptunaSearch + ASHA script (:mod:`tune_tl.bench.handwritten`).

Wall time includes everything each run does (data, model, Ray start of trials, checkpoints). For the
searches the table also gives the anytime figure: the seconds from a search's start until one of its
epochs first scored (a)'s accuracy, read from the search's own ``epochs`` table.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

from tune_tl.bench.handwritten import run_handwritten
from tune_tl.bench.suite import at_resolution, fixed_spec, machine, plain_fit, run_sections, search_figures, time_to_reach
from tune_tl.config import SearchSpec, load_space
from tune_tl.search.session import init_ray

SAMPLES, EPOCHS, RESOLUTION = 16, 6, 64
#: The default space before the recorded curves narrowed it.
OLD_SPACE = "broad"  # a shipped space (tune_tl/search_spaces/broad.yaml)
#: The issue's target: (c) reaches (a)'s accuracy within this multiple of (a)'s wall time.
TARGET_RATIO = 2.5


@dataclasses.dataclass(frozen=True)
class HeadlineRow:
    run: str
    best: float
    wall: float
    note: str = ""
    curve: tuple[tuple[float, float], ...] = ()  # searches: (seconds since start, val acc) of every epoch


def headline_spec(base: SearchSpec, samples: int = SAMPLES, epochs: int = EPOCHS) -> SearchSpec:
    """The default space at 64 px with ``samples`` trials of at most ``epochs`` epochs."""
    budget = dataclasses.replace(base.budget, samples=samples, max_epochs=epochs)
    return dataclasses.replace(at_resolution(base, RESOLUTION), budget=budget)


def textbook_fit(base: SearchSpec, epochs: int) -> HeadlineRow:
    """(a): the textbook recipe in a plain loop (no Ray, no Optuna, no sink, no checkpoints)."""
    import torch


    torch.set_num_threads(os.cpu_count() or 1)
    start = time.time()
    history, _ = plain_fit(fixed_spec(base, epochs, resolution=RESOLUTION, lr=1e-3), "cpu")
    wall = time.time() - start
    return HeadlineRow("(a) one textbook fine-tune, no search (whole model, AdamW 1e-3, linear head)",
                       max(h.val_acc for h in history), wall,
                       f"{epochs} epochs, plain loop, {torch.get_num_threads()} threads")


def search_row(label: str, spec: SearchSpec, out: Path, name: str, **options) -> HeadlineRow:
    f = search_figures(spec, out, name, **options)
    return HeadlineRow(label, f["best"], f["wall"],
                       f"{f['epochs']} epochs trained, {f['pruned']} pruned, best first reached after {f['to_best']:.0f} s",
                       tuple(f["curve"]))


def run_headline(base: SearchSpec, out: Path, quick: bool = False, handwritten: bool = False) -> list[HeadlineRow]:
    """Run (a)–(e) (and (f)), logging each row as it is measured (a long run on a busy machine)."""
    samples, epochs = (6, 3) if quick else (SAMPLES, EPOCHS)
    spec = headline_spec(base, samples, epochs)
    old = headline_spec(load_space(OLD_SPACE), samples, epochs)
    rows = _Logged()
    rows.append(textbook_fit(base, epochs))
    rows.append(search_row("(b) old default: old space, ASHA on epoch rungs, stock TPE, no textbook start", old, out, "old-default",
                           scheduler="asha", sampler="tpe-classic", textbook_start=False))
    rows.append(search_row("(c) new default: `tune-tl search` (default space, cost-aware ASHA, textbook start, scaled TPE)", spec, out,
                           "new-default"))
    budget = round(TARGET_RATIO * rows[0].wall)
    timed = dataclasses.replace(spec, budget=dataclasses.replace(spec.budget, time=budget))
    rows.append(search_row(f"(d) new default with `--time-budget {budget}` ({TARGET_RATIO} × (a)'s wall)", timed, out,
                           "new-default-budget"))
    rows.append(search_row("(e) new scheduler and sampler on the old space", old, out, "new-on-old-space"))
    if handwritten:
        script = run_handwritten(samples=samples, max_epochs=epochs, resolution=RESOLUTION, storage=out / "handwritten")
        rows.append(HeadlineRow("(f) hand-written Ray Tune + OptunaSearch + ASHA script", script.best, script.wall,
                                "freeze depth / head / lr"))
    return rows


class _Logged(list):
    def append(self, row: HeadlineRow) -> None:
        super().append(row)
        print(f"measured: {row.run}: best val acc {100 * row.best:.1f} %, wall {row.wall:.0f} s ({row.note})", flush=True)


def print_headline(rows: list[HeadlineRow], samples: int = SAMPLES, epochs: int = EPOCHS) -> None:
    a = rows[0]
    print(f"\nDigits at {RESOLUTION} px; searches: {samples} trials, ≤ {epochs} epochs, 1 CPU per trial.\n")
    print(f"| run | best val acc | wall | acc − (a) | wall ÷ (a) | reached (a)'s {100 * a.best:.1f} % after | notes |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.run} | {100 * r.best:.1f} % | {r.wall:.0f} s | {100 * (r.best - a.best):+.1f} pts | {r.wall / a.wall:.2f}× "
              f"| {_reached(r, a)} | {r.note} |")


def _reached(row: HeadlineRow, a: HeadlineRow) -> str:
    if row is a:
        return f"{a.wall:.0f} s (1.00×)"
    if not row.curve:
        return "—"
    seconds = time_to_reach(list(row.curve), a.best)
    return "never" if seconds is None else f"{seconds:.0f} s ({seconds / a.wall:.2f}×)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tune_tl.bench",
                                     description="Side-by-side benchmarks: the headline (textbook fine-tune vs old and new default), "
                                                 "then optionally the other sections.")
    parser.add_argument("--quick", action="store_true", help="small searches: a few minutes on 2 CPU cores")
    parser.add_argument("--handwritten", action="store_true",
                        help="add the hand-written Ray Tune + OptunaSearch + ASHA script to the headline")
    parser.add_argument("--sections", action="store_true",
                        help="after the headline, run the other sections (schedulers, cache, overhead, sink, GPU)")
    parser.add_argument("--keep", metavar="DIR", help="keep each search's results folder under DIR (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    init_ray()  # a fresh local Ray (or $RAY_ADDRESS), never a stale cluster left on the machine

    base = load_space()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_headline(base, Path(args.keep or tmp), quick=args.quick, handwritten=args.handwritten)
    print(f"\nMachine: {machine()}")
    print_headline(rows, *((6, 3) if args.quick else (16, 6)))
    if args.sections:
        run_sections(base, args.quick)
