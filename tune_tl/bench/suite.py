"""The side-by-side sections behind ``python -m tune_tl.bench --sections`` and the helpers the benchmarks share.

The command itself is :func:`tune_tl.bench.headline.main`:

    python -m tune_tl.bench                 # the headline: textbook fine-tune vs old and new default (~10 min, 2 CPUs)
    python -m tune_tl.bench --handwritten   # ... plus a hand-written Ray Tune + Optuna + ASHA script
    python -m tune_tl.bench --sections      # ... then the other sections (schedulers, cache, overhead, sink, GPU)
    python -m tune_tl.bench --quick         # everything smaller: a few minutes

Every comparison runs in the same process, on the same machine, with the same seed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from tune_tl.analysis.frame import load_results
from tune_tl.bench.cache import measure_feature_cache
from tune_tl.config import Fixed, ParamSpec, SearchSpec, parse_settings
from tune_tl.config.params import TrialConfig
from tune_tl.search.options import SearchOptions
from tune_tl.search.run import run_search
from tune_tl.search.session import versions
from tune_tl.store.results import ParquetSink
from tune_tl.training.context import prepare_context
from tune_tl.training.loop import fit
from tune_tl.training.recipe import build_trial

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Row:
    comparison: str
    variant: str
    figures: str


def machine() -> str:
    """The benchmarks' machine line: CPU, GPU, and the library versions a search records (``search.session.versions``)."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    libraries = ", ".join(f"{name} {version}" for name, version in versions()["versions"].items())
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, GPU: {gpu}; {libraries}"


# ------------------------------------------------------------------ searches


def search_figures(spec: SearchSpec, out: Path, name: str, **options) -> dict:
    """Run one search and measure best accuracy, epochs trained, wall time, time to the best."""

    start = time.time()
    run_search(spec, SearchOptions(output=str(out), name=name, verbose=0, **options))
    wall = time.time() - start
    res = load_results(out / name)
    best = res.trials["best_val_acc"].max()
    first_best = res.epochs.loc[res.epochs["val_acc"] >= best - 1e-12, "time"].min()
    seconds = np.array([t.timestamp() - start for t in res.epochs["time"]])
    return {
        "best": best,
        "epochs": len(res.epochs),
        "wall": wall,
        "to_best": first_best.timestamp() - start,
        "pruned": int((res.trials["status"] == "pruned").sum()),
        "curve": sorted(zip(seconds.tolist(), res.epochs["val_acc"].tolist(), strict=False)),  # (s since start, val acc) per epoch
    }


def time_to_reach(curve: list[tuple[float, float]], accuracy: float) -> float | None:
    """Seconds from the search's start until some epoch first scored ``accuracy`` or more (``None``: never)."""
    return next((t for t, acc in curve if acc >= accuracy - 1e-12), None)


def fmt_search(f: dict) -> str:
    return (f"best val_acc {f['best']:.4f} · {f['epochs']} epochs trained · {f['pruned']} pruned · "
            f"wall {f['wall']:.0f} s · best first reached after {f['to_best']:.0f} s")


def bench_schedulers_and_samplers(spec: SearchSpec, out: Path) -> list[Row]:
    asha = search_figures(spec, out, "asha-tpe")  # the default scheduler (cost-asha)
    fifo = search_figures(spec, out, "fifo-tpe", scheduler="fifo")
    rand = search_figures(spec, out, "asha-random", sampler="random")
    n = spec.budget.samples
    return [
        Row(f"1. Default (cost-aware ASHA) vs FIFO ({n} trials, TPE)", "cost-asha", fmt_search(asha)),
        Row("", "FIFO (no pruning)", fmt_search(fifo)),
        Row("", "cost-asha / FIFO",
            f"Δ best {100 * (asha['best'] - fifo['best']):+.2f} points · compute {asha['epochs'] / fifo['epochs']:.2f}× "
            f"· wall {asha['wall'] / fifo['wall']:.2f}×"),
        Row(f"2. TPE vs random ({n} trials, cost-asha)", "TPE", f"best val_acc {asha['best']:.4f}"),
        Row("", "random", f"best val_acc {rand['best']:.4f}"),
    ]


#: One fully fixed configuration (full fine-tune of lite0) for the overhead and GPU comparisons.
FIXED = {"resolution": 32, "batch_size": 64, "freeze_policy": "full", "optimizer": "adamw", "lr": 1e-3, "head": "linear"}


def at_resolution(spec: SearchSpec, resolution: int) -> SearchSpec:
    """``spec`` with ``resolution`` fixed (the benchmarks' tasks are defined at one size)."""
    params = tuple(ParamSpec(p.name, Fixed(resolution)) if p.name == "resolution" else p for p in spec.params)
    return dataclasses.replace(spec, params=params)


def fixed_spec(base: SearchSpec, epochs: int, **params) -> SearchSpec:
    raw = {"seed": base.seed, "budget": {"samples": 1, "max_epochs": epochs, "grace_period": 1}, "params": {**FIXED, **params}}
    return parse_settings(raw, "benchmark", allow_params=True)


def plain_fit(spec: SearchSpec, device: str):
    """The same training as a trial, in a plain PyTorch loop: no Ray, no Optuna, no sink, no checkpoints."""

    context = prepare_context(spec).context
    cfg = TrialConfig.from_dict({p.name: p.dist.value for p in spec.params})
    plan = build_trial(cfg, context, device)
    return fit(plan.model, plan.split, plan.fit, param_groups=plan.param_groups), context


def bench_overhead(base: SearchSpec, out: Path, epochs: int) -> list[Row]:
    """One trial through tune_tl (Ray, Optuna, sink, checkpoints) vs the same training in a plain loop."""
    import torch

    spec = fixed_spec(base, epochs)
    start = time.time()
    f = search_figures(spec, out, "overhead", scheduler="fifo")
    tuned = time.time() - start

    start = time.time()
    torch.set_num_threads(1)  # the trial's share: --cpus-per-trial 1
    history, _ = plain_fit(spec, "cpu")
    plain = time.time() - start
    return [
        Row(f"4. Framework overhead ({epochs} epochs, full fine-tune, 1 CPU thread)", "tune_tl search (1 trial)",
            f"{tuned:.1f} s end to end, val_acc {f['best']:.4f}"),
        Row("", "plain PyTorch loop", f"{plain:.1f} s (data + model + fit), val_acc {history[-1].val_acc:.4f}"),
        Row("", "ratio", f"{tuned / plain:.2f}×"),
    ]


def bench_sink(n_trials: int = 10_000, epochs: int = 10) -> list[Row]:
    """A simulated search through the Parquet callback's hooks: ms per result, then load time."""

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        sink = ParquetSink(Path(tmp), max_epochs=epochs)
        start = time.perf_counter()
        for i in range(n_trials):
            t = SimpleNamespace(trial_id=f"t{i:05d}", config={"lr": float(rng.uniform(1e-4, 1e-1)), "head": "linear"}, error_file=None)
            sink.on_trial_start(0, [], t)
            for epoch in range(1, epochs + 1):
                sink.on_trial_result(0, [], t, {"epoch": epoch, "train_loss": 0.5, "val_loss": 0.5, "val_acc": float(rng.uniform()),
                                                "lr": 0.01, "epoch_seconds": 1.0, "trainable_params": 1000, "diverged": False})
            sink.on_trial_complete(0, [], t)
            if i % 100 == 99:  # Ray snapshots the experiment (and the sink flushes) every ~10 s
                sink.get_state()
        sink.on_experiment_end([])
        per_result = (time.perf_counter() - start) / (n_trials * epochs) * 1000
        start = time.perf_counter()
        res = load_results(tmp)
        load = time.perf_counter() - start
        assert len(res.trials) == n_trials and len(res.epochs) == n_trials * epochs
    return [
        Row("5. Results sink", "per result (trial rows, a flush per 1,000 results, compaction)", f"{per_result:.3f} ms"),
        Row("", f"load {n_trials:,} trials × {epochs} epochs", f"{load:.2f} s"),
    ]


def bench_cache() -> list[Row]:
    """Head-only epochs with the frozen-feature cache vs running the frozen backbone every epoch."""
    f = measure_feature_cache(resolution=64, epochs=3)
    return [
        Row(f"3. Frozen-feature cache (head-only epoch, lite0 {f['resolution']} px, 1 thread)", "recompute backbone",
            f"{f['uncached_s_per_epoch']:.3f} s/epoch"),
        Row("", "cached (later trials)",
            f"{f['warm_s_per_epoch']:.4f} s/epoch (first trial's first epoch computes: {f['cold_first_epoch_s']:.2f} s)"),
        Row("", "speed-up", f"{f['ratio']:.0f}× · same val_acc: {f['same_val_acc']}"),
    ]


def bench_gpu(out: Path, spec: SearchSpec) -> list[Row]:
    """Fine-tuning images/s, and trials/hour at 1, 0.5 and 0.25 GPU per trial (only with a GPU)."""
    import torch

    if not torch.cuda.is_available():
        return [Row("6. GPU", "—", "no GPU on this machine: skipped")]
    spec2 = fixed_spec(spec, 2, batch_size=128)
    history, context = plain_fit(spec2, "cuda")
    images = len(context.data.splits[32].train_y)
    rows = [Row("6. GPU fine-tuning (lite0, 32 px, batch 128)", "images/s", f"{images / history[-1].epoch_seconds:.0f}")]
    for share in (1.0, 0.5, 0.25):
        s = dataclasses.replace(spec2, budget=dataclasses.replace(spec2.budget, samples=8, max_epochs=2))
        f = search_figures(s, out, f"gpu-{share}", scheduler="fifo", gpus_per_trial=share, cpus_per_trial=1)
        rows.append(Row("", f"{share} GPU per trial", f"{8 / f['wall'] * 3600:.0f} trials/hour"))
    return rows


def run_sections(base: SearchSpec, quick: bool) -> None:
    """The older side-by-side sections: ASHA vs FIFO, TPE vs random, cache, overhead, sink, GPU."""
    samples, epochs = (8, 3) if quick else (20, 6)
    spec = dataclasses.replace(base, budget=dataclasses.replace(base.budget, samples=samples, max_epochs=epochs, reduction_factor=2))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows += bench_schedulers_and_samplers(spec, out)
        rows += bench_cache()
        rows += bench_overhead(base, out, epochs=2 if quick else 4)
        rows += bench_sink()
        rows += bench_gpu(out, spec)
    print(f"\nMachine: {machine()}\nMode: {'quick' if quick else 'full'}\n")
    print("| comparison | variant | figures |\n|---|---|---|")
    for r in rows:
        print(f"| {r.comparison} | {r.variant} | {r.figures} |")

