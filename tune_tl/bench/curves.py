"""Record learning curves once, so schedulers and samplers can be replayed over them many times.

    python -m tune_tl.bench curves --resolution 64 --configs 24 --max-epochs 6 \
        --out tune_tl/bench/curves/digits64.parquet
    python -m tune_tl.bench curves --textures --resolution 96 --configs 16 --max-epochs 5 \
        --out tune_tl/bench/curves/textures96.parquet

Every config runs to the full epoch budget through tune_tl's own search (FIFO scheduler, random
sampler), so the curves are real tune_tl trials: the same recipe, the same epoch seconds, the same
feature cache. The result is one compact Parquet table (``CURVE_COLUMNS`` plus one column per
parameter that was sampled), in the spirit of Syne Tune's blackbox repository.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tune_tl.analysis.frame import load_results
from tune_tl.bench.suite import machine
from tune_tl.config import PARAMS, Fixed, ParamSpec, SearchSpec, load_space
from tune_tl.errors import TuneTLError
from tune_tl.search.options import SearchOptions
from tune_tl.search.run import run_search

log = logging.getLogger(__name__)

#: The framework columns of a curve table; every other column is a trial parameter.
CURVE_COLUMNS = ("trial_id", "epoch", "val_acc", "epoch_seconds", "phase", "cached_features")
#: The recorded curve tables shipped as package data (``tune_tl/bench/curves/*.parquet``).
CURVES_DIR = resources.files("tune_tl.bench") / "curves"

TEXTURE_CLASSES = ("stripes_h", "stripes_v", "stripes_diag", "checks", "dots", "noise")


# ------------------------------------------------------------------ a second task: textures


def texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``size``×``size`` RGB texture of class ``kind`` with a random frequency, phase, colours and
    noise, so that classes differ in structure (not colour) and no two images are alike."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    freq = rng.uniform(3, 9)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "stripes_h":
        wave = np.sin(2 * np.pi * freq * y + phase)
    elif kind == "stripes_v":
        wave = np.sin(2 * np.pi * freq * x + phase)
    elif kind == "stripes_diag":
        wave = np.sin(2 * np.pi * freq * (x + y) / np.sqrt(2) + phase)
    elif kind == "checks":
        wave = np.sign(np.sin(2 * np.pi * freq * x + phase)) * np.sign(np.sin(2 * np.pi * freq * y + phase))
    elif kind == "dots":
        cx, cy = (x * freq + phase) % 1.0 - 0.5, (y * freq + phase) % 1.0 - 0.5
        wave = np.where(cx**2 + cy**2 < rng.uniform(0.04, 0.09), 1.0, -1.0)
    elif kind == "noise":
        cells = max(2, int(freq * 2))
        coarse = rng.uniform(-1, 1, size=(cells, cells))
        wave = np.kron(coarse, np.ones((size // cells + 1, size // cells + 1)))[:size, :size]
    else:
        raise ValueError(f"unknown texture {kind!r}")
    fg, bg = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    t = (wave[..., None] + 1) / 2
    pixels = t * fg + (1 - t) * bg + rng.normal(0, 12, size=(size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def make_textures(folder: str | Path, per_class: int = 40, size: int = 128, seed: int = 0) -> Path:
    """Write ``folder/<class>/<i>.png`` for the six ``TEXTURE_CLASSES``; the same files for the same seed."""
    from PIL import Image

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for kind in TEXTURE_CLASSES:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(texture(kind, size, rng), "RGB").save(folder / kind / f"{i:03d}.png")
    return folder


# ------------------------------------------------------------------ recording


def with_overrides(spec: SearchSpec, configs: int | None, max_epochs: int | None, resolution: int | None,
                   data: str | None) -> SearchSpec:
    """``spec`` with the recording's budget, one fixed resolution and (optionally) an image folder."""
    budget = spec.budget
    if configs is not None:
        budget = dataclasses.replace(budget, samples=configs)
    if max_epochs is not None:
        budget = dataclasses.replace(budget, max_epochs=max_epochs, grace_period=min(budget.grace_period, max_epochs))
    for name, value in (("--configs", budget.samples), ("--max-epochs", budget.max_epochs)):
        if value < 1:
            raise TuneTLError(f"{name} must be at least 1, got {value}")
    params = spec.params
    if resolution is not None:
        if resolution < 16:
            raise TuneTLError(f"--resolution must be at least 16, got {resolution}")
        params = tuple(p for p in params if p.name != "resolution") + (ParamSpec("resolution", Fixed(resolution)),)
        params = tuple(sorted(params, key=lambda p: list(PARAMS).index(p.name)))
    spec = dataclasses.replace(spec, budget=budget, params=params)
    if data is not None:
        if not Path(data).is_dir():
            raise TuneTLError(f"--data {data}: not a folder (expected <path>/<class>/* images)")
        spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, source="imagefolder", path=str(data)))
    return spec


def curve_table(epochs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Join per-epoch results with each trial's parameters; only parameters some trial used are kept."""
    params = [c for c in PARAMS if c in trials.columns and trials[c].notna().any()]
    ids = {t: f"t{i:03d}" for i, t in enumerate(trials.sort_values("trial_id")["trial_id"])}
    table = epochs[list(CURVE_COLUMNS)].merge(trials[["trial_id", *params]], on="trial_id", how="inner")
    table["trial_id"] = table["trial_id"].map(ids)
    return table.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


def record(spec: SearchSpec, out: str | Path, work: str | Path, concurrency: int = 2, task: str = "") -> pd.DataFrame:
    """Run every config of ``spec`` to ``max_epochs`` (FIFO, random sampler) and write the curve table."""

    name = time.strftime("curves-%Y%m%d-%H%M%S")
    start = time.time()
    failure = None
    try:
        run_search(spec, SearchOptions(output=str(work), name=name, scheduler="fifo", sampler="random",
                                       concurrency=concurrency, verbose=0))
    except Exception as exc:  # noqa: BLE001 - e.g. Ray's OOM killer on a shared machine: keep what finished
        failure = exc
        log.error("the recording search failed (%s); writing the configs that finished", exc)
    wall = time.time() - start
    try:
        table = from_search(Path(work) / name, spec.budget.max_epochs)  # a failed run keeps its finished configs
    except TuneTLError:
        if failure is None:
            raise
        raise TuneTLError(f"the recording search failed before any config finished ({failure}); "
                          f"its results are kept in {Path(work) / name}") from None
    meta = {
        "task": task or spec.data.source,
        "space": spec.source,
        "max_epochs": str(spec.budget.max_epochs),
        "configs": str(table["trial_id"].nunique()),
        "concurrency": str(concurrency),
        "wall_seconds": f"{wall:.0f}",
        "machine": machine(),
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if failure is not None:
        meta["interrupted"] = f"{type(failure).__name__}: {failure}"[:300]
    write_curves(table, out, meta)
    return table


def from_search(path: str | Path, max_epochs: int | None = None) -> pd.DataFrame:
    """The curve table of an existing search's results: only trials that ran ``max_epochs`` (default:
    the longest any trial ran), so the curves are full-budget curves as ``record`` makes them."""
    res = load_results(path)
    if not len(res.epochs):
        raise TuneTLError(f"--from-search {path}: no epoch results recorded yet")
    runs = res.epochs.groupby("trial_id")["epoch"].max()
    full = runs[runs >= (max_epochs or runs.max())].index
    if not len(full):
        raise TuneTLError(f"--from-search {path}: no trial ran the full {max_epochs or runs.max()} epochs yet")
    return curve_table(res.epochs[res.epochs["trial_id"].isin(full)], res.trials[res.trials["trial_id"].isin(full)])


def write_curves(table: pd.DataFrame, out: str | Path, meta: dict[str, str]) -> None:
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    ours = {f"tune_tl.{k}".encode(): v.encode() for k, v in meta.items()}
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **ours})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(arrow, out, compression="zstd")


def read_curves(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A curve table and its recording metadata (``task``, ``max_epochs``, ``machine``, ...)."""
    path = Path(path)
    if not path.is_file():
        raise TuneTLError(f"--curves {path}: no such file (record one with `python -m tune_tl.bench curves`)")
    try:
        arrow = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise TuneTLError(f"--curves {path}: not a Parquet curve table ({exc})") from None
    missing = [c for c in ("trial_id", "epoch", "val_acc", "epoch_seconds") if c not in arrow.column_names]
    if missing:
        raise TuneTLError(f"--curves {path}: missing columns {missing}; record it with `python -m tune_tl.bench curves`")
    meta = {k.decode()[len("tune_tl."):]: v.decode() for k, v in (arrow.schema.metadata or {}).items() if k.startswith(b"tune_tl.")}
    meta.setdefault("task", path.stem)
    return arrow.to_pandas(), meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tune_tl.bench curves", description=__doc__.splitlines()[0])
    parser.add_argument("--space", metavar="FILE", help="search space file (default: the bundled default space)")
    parser.add_argument("--data", metavar="PATH", help="image folder to record on (overrides data.source and data.path)")
    parser.add_argument("--textures", action="store_true",
                        help="record on the generated texture task (6 classes × 40 images, made by make_textures)")
    parser.add_argument("--configs", type=int, default=24, help="configs to train to the full budget (default 24)")
    parser.add_argument("--max-epochs", type=int, help="epochs per config (default 6; with --from-search: the longest run)")
    parser.add_argument("--resolution", type=int, help="fix the input resolution (default: the space's)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at a time while recording (default 2)")
    parser.add_argument("--from-search", metavar="DIR",
                        help="convert an existing (FIFO) search's results instead of running one; keeps full-budget trials")
    parser.add_argument("--out", metavar="FILE", default=str(CURVES_DIR / "curves.parquet"), help="Parquet file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.textures and args.data:
            raise TuneTLError("--textures and --data both name the data; give one")
        if args.from_search:
            table = from_search(args.from_search, args.max_epochs)
            write_curves(table, args.out, {"task": Path(args.from_search).name, "max_epochs": str(table["epoch"].max()),
                                           "configs": str(table["trial_id"].nunique()), "source": str(args.from_search)})
            print(f"{args.out}: {table['trial_id'].nunique()} configs, {len(table)} epochs")
            return 0
        spec = with_overrides(load_space(args.space), args.configs, args.max_epochs or 6, args.resolution, args.data)
        # The search folder is kept until the table is written: a crashed recording can be salvaged
        # with --from-search.
        work = Path(tempfile.mkdtemp(prefix="tune-tl-curves-"))
        log.info("recording search under %s", work)
        task = ""
        if args.textures:
            folder = make_textures(work / "textures")
            spec = with_overrides(spec, None, None, None, str(folder))
            task = "textures"
        table = record(spec, args.out, work / "results", args.concurrency, task)
        shutil.rmtree(work, ignore_errors=True)
    except TuneTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{args.out}: {table['trial_id'].nunique()} configs, {len(table)} epochs")
    return 0
