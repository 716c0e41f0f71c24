"""``python -m tune_tl.bench photos``: five ways to learn a folder of photos, side by side per dataset (issue 23).

    python -m tune_tl.bench photos --data DIR [DIR ...] --time-budget 120 600 --out photos.md
    python -m tune_tl.bench photos --quick --data DIR        # smoke test: Lite0, one 60 s budget, no synthetic sets
    python -m tune_tl.bench photos --rows ace --data DIR     # only rows (a), (c) and (e)
    python -m tune_tl.bench photos --rows abe --fine-tune-backbones efficientnet_lite0 --data DIR  # (b) for Lite0 only

Per dataset, one row after another in one process, every row on the folder's own ``train/`` and ``val/``:

(a) a linear probe per backbone at its native size: frozen features, ``LogisticRegressionCV``
    (:mod:`tune_tl.bench.probe_baseline`; independent of the search's own probe stage);
(b) one textbook fine-tune per backbone: the whole model, AdamW 1e-3, cosine, random-resized crop
    (area 0.08–1) + flip, 6 epochs, at 224 px for every backbone (the textbook's size, not the native
    one), in a plain PyTorch loop with every CPU thread;
(c) the hand-written Ray Tune + OptunaSearch + ASHA script (:mod:`tune_tl.bench.handwritten`) per budget;
(d) the previous default per budget: ``spaces/imagefolder_before.yaml`` (a frozen copy of the
    image-folder space before issue 23) with that day's default search options;
(e) the new default per budget: ``tune-tl search --data DIR --time-budget T`` through the CLI's own
    ``main``, so it measures whatever ships; its note counts the trials that finished an epoch training a backbone block;
(f) the ensemble (e)'s search chose on val when it ended (``search.ensemble``): no extra training.

A folder with a ``test/`` split gets a test column: (e)'s shipped model and (f)'s ensemble, each scored on it once
when the search ended (``search.held_out``); nothing chooses on it.

Besides the given folders: digits at 64 px and the generated textures (:mod:`tune_tl.bench.photo_sets`).
For every search: best so far at 60/120/300/600 s since its start (tune_tl's from its ``epochs`` table
and the start time in its record, the script's from Ray's results), its final best, its wall
(data loading included) and the disk its folder uses. Tables and targets: :mod:`tune_tl.bench.photos_report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import tempfile
import time
from functools import partial
from importlib import resources
from pathlib import Path

from tune_tl import cli
from tune_tl.analysis.frame import load_results
from tune_tl.analysis.plots import anytime_curve
from tune_tl.bench.handwritten import run_handwritten
from tune_tl.bench.photo_sets import PhotoSet, digits_folder, given_folder, textures_folder
from tune_tl.bench.photos_report import BenchRow, render
from tune_tl.bench.portfolio import fine_tune
from tune_tl.bench.probe_baseline import linear_probe
from tune_tl.bench.suite import machine
from tune_tl.config import DataSpec, SearchSpec, load_space
from tune_tl.config.spec import with_budget
from tune_tl.data.sources import with_data_path
from tune_tl.errors import TuneTLError
from tune_tl.search.options import SearchOptions
from tune_tl.search.run import run_search
from tune_tl.search.session import init_ray
from tune_tl.store.search_run import SearchRun
from tune_tl.training.cost_model import recorded_cost_model, table_configs

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: The rows, (a) to (e); ``--rows`` measures a subset (the fine-tunes of a set of thousands of images take hours).
ROWS = "abcde"
#: Row (d)'s space: the image-folder defaults as they were before issue 23, frozen.
PREVIOUS_SPACE = resources.files("tune_tl.bench") / "spaces" / "imagefolder_before.yaml"
#: Row (d)'s options: the search defaults of the same day, spelled out so that later defaults do not leak in.
PREVIOUS_OPTIONS = {"scheduler": "cost-asha", "sampler": "tpe-gain", "textbook_start": True, "probes": False}
#: Row (b): the textbook's input size and augmentation (torchvision's RandomResizedCrop(224) + flip).
FINE_TUNE_SIZE = 224
FINE_TUNE_AUGMENT = {"aug_crop_scale": 0.08, "aug_flip": 1}
#: Row (c): Lite0 at its native size, trials up to 6 epochs, as many trials as the budget allows.
HANDWRITTEN_SIZE, HANDWRITTEN_SAMPLES = 224, 200


@dataclasses.dataclass(frozen=True)
class PhotosPlan:
    """What one run measures: the rows (letters), the search budgets, the backbones of (a) and of (b), the epochs of (b) and (c)."""

    budgets: tuple[float, ...] = (120.0, 600.0)
    backbones: tuple[str, ...] = BACKBONES
    epochs: int = 6
    rows: str = ROWS
    #: Row (b)'s backbones (``--fine-tune-backbones``): a textbook fine-tune of a set of thousands of 224 px images takes
    #: a CPU most of an hour per backbone. ``None``: the same as (a)'s.
    fine_tune_backbones: tuple[str, ...] | None = None


QUICK = PhotosPlan(budgets=(60.0,), backbones=BACKBONES[:1], epochs=1)


# ------------------------------------------------------------------ rows


def probe_row(ds: PhotoSet, backbone: str) -> BenchRow:
    r = linear_probe(DataSpec(source="imagefolder", path=str(ds.path)), backbone)
    return BenchRow(ds.name, "probe", f"{backbone}, {r.resolution} px", r.val_acc, r.wall,
                    note=f"C = {r.C:.3g} by {r.folds}-fold CV; features {r.feature_seconds:.0f} s")


def previous_spec(ds: PhotoSet) -> SearchSpec:
    """The previous default's space pointed at ``ds`` (as ``--data`` would)."""
    spec = load_space(str(PREVIOUS_SPACE))
    return dataclasses.replace(spec, data=with_data_path(spec.data, str(ds.path)))


def fine_tune_row(ds: PhotoSet, backbone: str, epochs: int) -> BenchRow:
    best, wall = fine_tune(previous_spec(ds), backbone, epochs, FINE_TUNE_SIZE, **FINE_TUNE_AUGMENT)
    return BenchRow(ds.name, "fine-tune", f"{backbone}, {FINE_TUNE_SIZE} px", best, wall,
                    note=f"{epochs} epoch{'s' * (epochs != 1)}, best epoch's val acc, {os.cpu_count()} threads")


def handwritten_row(ds: PhotoSet, budget: float, epochs: int, out: Path) -> BenchRow:
    result = run_handwritten(HANDWRITTEN_SAMPLES, epochs, HANDWRITTEN_SIZE, out / search_name(ds, "handwritten", budget),
                             data=DataSpec(source="imagefolder", path=str(ds.path)), time_budget=budget)
    return BenchRow(ds.name, "handwritten", f"{budget:g} s", result.best, result.wall, budget, result.curve, disk_bytes(result.storage),
                    f"{result.trials} trials, {len(result.curve)} epochs; Lite0 {HANDWRITTEN_SIZE} px, no augmentation")


def previous_row(ds: PhotoSet, budget: float, out: Path) -> BenchRow:
    name = search_name(ds, "previous", budget)
    start = time.time()
    run_search(with_budget(previous_spec(ds), time=budget), SearchOptions(output=str(out), name=name, **PREVIOUS_OPTIONS))
    return search_row(ds, "previous", budget, out / name, time.time() - start)


def new_row(ds: PhotoSet, budget: float, out: Path) -> BenchRow:
    name = search_name(ds, "new", budget)
    start = time.time()
    code = cli.main(["search", "--data", str(ds.path), "--time-budget", f"{budget:g}", "--output", str(out), "--name", name])
    if code != 0:
        raise TuneTLError(f"row (e): `tune-tl search --data {ds.path}` exited with {code} (its message is above)")
    return search_row(ds, "new", budget, out / name, time.time() - start)


def ensemble_row(ds: PhotoSet, budget: float, out: Path) -> BenchRow | None:
    """Row (f): the ensemble (e)'s search chose on val when it ended, with its test figure; ``None`` when it chose none."""
    run = SearchRun(out / search_name(ds, "new", budget))
    ensemble, test = run.ensemble_record, run.test_record or {}
    if not ensemble:
        return None
    members = ", ".join(f"{m['trial_id']} {m['weight']:.2f}" for m in ensemble["members"])
    single = len(ensemble["members"]) == 1
    return BenchRow(ds.name, "ensemble", f"{budget:g} s", float(ensemble["val_acc"]), 0.0,
                    test=test.get("test_acc") if single else test.get("ensemble_test_acc"),
                    note=("one member: no average beat the best single on val" if single else members)
                    + f"; best single on val {100 * ensemble['best_single_val_acc']:.1f} %, shipped trial's test "
                    + ("—" if test.get("test_acc") is None else f"{100 * test['test_acc']:.1f} %"))


def fine_tunes_with_an_epoch(run: SearchRun) -> int | None:
    """How many of a search's trials finished an epoch that trained a backbone block (the cost model's masks)."""
    recorded = recorded_cost_model(run)
    if recorded is None:
        return None
    model, trials, epochs = recorded[0], table_configs(run.trials()), run.epochs()
    rows = zip(epochs["trial_id"], epochs["epoch"].astype(int), epochs["probe"].eq(True), strict=True)
    trained = {t for t, e, probe in rows if not probe and t in trials and any(model.trainable_blocks(trials[t], e))}
    return len(trained)


def search_row(ds: PhotoSet, kind: str, budget: float, folder: Path, wall: float) -> BenchRow:
    """A tune_tl search's row: its anytime curve (seconds since its recorded start), trials, disk."""
    res = load_results(folder)
    anytime = anytime_curve(res)
    curve = tuple(zip((60 * anytime["minutes"]).tolist(), anytime["best_val_acc"].tolist(), strict=True))
    pruned = int((res.trials["status"] == "pruned").sum())
    run = SearchRun(folder)
    tuned = fine_tunes_with_an_epoch(run)
    return BenchRow(ds.name, kind, f"{budget:g} s", max((acc for _, acc in curve), default=float("nan")), wall, budget, curve,
                    disk_bytes(folder), f"{len(res.trials)} trials ({pruned} pruned), {len(res.epochs)} epochs"
                    + ("" if tuned is None else f", {tuned} fine-tune(s) with an epoch"),
                    test=(run.test_record or {}).get("test_acc"))


def search_name(ds: PhotoSet, kind: str, budget: float) -> str:
    return f"{ds.name}-{kind}-{budget:g}s"


def disk_bytes(folder: Path) -> int:
    """Bytes in the files under ``folder`` (what a search leaves on disk)."""
    return sum(f.lstat().st_size for f in Path(folder).rglob("*") if f.is_file() and not f.is_symlink())


def run_dataset_jobs(ds: PhotoSet, plan: PhotosPlan, out: Path) -> list[partial]:
    """The plan's rows on one dataset, in order: probes, fine-tunes, then per budget (c), (d), (e)."""
    jobs = [partial(probe_row, ds, b) for b in plan.backbones if "a" in plan.rows]
    jobs += [partial(fine_tune_row, ds, b, plan.epochs) for b in plan.fine_tune_backbones or plan.backbones if "b" in plan.rows]
    for budget in plan.budgets:
        searches = {"c": partial(handwritten_row, ds, budget, plan.epochs, out), "d": partial(previous_row, ds, budget, out),
                    "e": partial(new_row, ds, budget, out)}
        jobs += [job for row, job in searches.items() if row in plan.rows]
        jobs += [partial(ensemble_row, ds, budget, out)] if "e" in plan.rows else []
    return jobs


def run_dataset(ds: PhotoSet, plan: PhotosPlan, out: Path) -> list[BenchRow]:
    """Every planned row on one dataset, each printed as it is measured (a long run on a busy machine)."""
    jobs = run_dataset_jobs(ds, plan, out)
    rows = []
    for job in jobs:
        r = job()
        if r is None:
            continue
        print(f"measured: {ds.name}: {r.kind} {r.setting}: best val acc {100 * r.best:.1f} %, wall {r.wall:.0f} s ({r.note})", flush=True)
        rows.append(r)
    return rows


# ------------------------------------------------------------------ command line


def unique_names(sets: list[PhotoSet]) -> list[PhotoSet]:
    """``sets`` with names that are safe in a search name and unique (two folders may share a base name)."""
    named: list[PhotoSet] = []
    for ds in sets:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", ds.name)
        while name in {n.name for n in named}:
            name += "_"
        named.append(dataclasses.replace(ds, name=name))
    return named


def _plan(args) -> PhotosPlan:
    plan = QUICK if args.quick else PhotosPlan()
    if args.time_budget:
        if min(args.time_budget) <= 0:
            raise TuneTLError(f"--time-budget: every budget must be positive seconds, got {args.time_budget}")
        plan = dataclasses.replace(plan, budgets=tuple(sorted(set(args.time_budget))))
    if args.rows is not None:
        if not args.rows or set(args.rows) - set(ROWS):
            raise TuneTLError(f"--rows {args.rows}: give letters of {ROWS} (e.g. --rows ace), each a row to measure")
        plan = dataclasses.replace(plan, rows="".join(sorted(set(args.rows))))
    if args.fine_tune_backbones:
        if set(args.fine_tune_backbones) - set(BACKBONES):
            raise TuneTLError(f"--fine-tune-backbones: give names of {', '.join(BACKBONES)}, got {' '.join(args.fine_tune_backbones)}")
        plan = dataclasses.replace(plan, fine_tune_backbones=tuple(args.fine_tune_backbones))
    return plan


def _check_paths(args) -> None:
    """``--out`` and ``--keep`` are usable before hours of measuring, not after."""
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise TuneTLError(f"--out {args.out}: its folder does not exist; create it or give another file")
    if args.keep and Path(args.keep).exists() and (not Path(args.keep).is_dir() or any(Path(args.keep).iterdir())):
        raise TuneTLError(f"--keep {args.keep}: not an empty folder; give a new or empty folder for the search folders")
    if not args.data and (args.no_synthetic or args.quick):
        raise TuneTLError("no dataset: give --data DIR [DIR ...] (with --quick or --no-synthetic the synthetic sets are left out)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tune_tl.bench photos", description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", metavar="DIR", default=[], help="image folders with train/<class>/* and val/<class>/*")
    parser.add_argument("--time-budget", nargs="+", type=float, metavar="SECONDS",
                        help="time budget of each search row, one run per budget (default 120 600; --quick: 60)")
    parser.add_argument("--no-synthetic", action="store_true", help="leave out digits at 64 px and the generated textures")
    parser.add_argument("--quick", action="store_true", help="smoke test: Lite0 only, 1 epoch for (b) and (c), one 60 s budget, "
                                                             "given folders only")
    parser.add_argument("--rows", metavar="LETTERS", help=f"measure only these rows, e.g. ace (default {ROWS}: every row)")
    parser.add_argument("--fine-tune-backbones", nargs="+", metavar="NAME",
                        help="row (b) only for these backbones (default: every one of row (a), Lite0 with --quick)")
    parser.add_argument("--out", metavar="FILE", help="also write the tables to FILE (Markdown, to include verbatim)")
    parser.add_argument("--keep", metavar="DIR", help="keep every search's folder under DIR (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    command = "python -m tune_tl.bench photos " + " ".join(sys.argv[2:] if argv is None else argv)  # for the tables' header
    try:
        plan = _plan(args)
        _check_paths(args)
        sets = [given_folder(path) for path in args.data]  # every folder checked before any work
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        init_ray()  # a fresh local Ray (or $RAY_ADDRESS), never a stale cluster left on the machine
        with tempfile.TemporaryDirectory(prefix="tune-tl-photos-") as tmp:
            work = Path(args.keep or tmp).resolve()  # Ray wants an absolute storage path
            if not (args.no_synthetic or args.quick):
                sets += [digits_folder(work / "data"), textures_folder(work / "data")]
            sets = unique_names(sets)
            real, by_dataset = {ds.name for ds in sets if ds.real}, {}
            for ds in sets:
                by_dataset[ds.name] = run_dataset(ds, plan, work)
                preamble = [f"`{command}`, {started} to {time.strftime('%H:%M UTC', time.gmtime())}", "", f"Machine: {machine()}", ""]
                text = render(by_dataset, plan.budgets, real, preamble)
                if args.out:  # after every dataset: a run that dies hours in keeps what it measured
                    Path(args.out).write_text(text)
    except TuneTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n" + text)
    return 0
