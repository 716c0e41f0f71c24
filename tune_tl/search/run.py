"""Build and run the Ray Tune search: data and weights once in the driver, then the Tuner.

Everything that can be wrong with the user's input is checked here before Ray starts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune_tl.errors import TuneTLError
from tune_tl.config.space import SearchSpec
from tune_tl.search.resources import check_resources
from tune_tl.store.storage import Location

log = logging.getLogger(__name__)

METRIC, MODE = "val_acc", "max"  # the one place the objective is named
SKIPPED_FILE = "skipped_images.txt"


@dataclass(frozen=True)
class SearchOptions:
    """How to run a search (not what to search): resources, concurrency, where results go."""

    output: str = "results"
    name: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    concurrency: int | None = None
    #: Ray cluster to join (``ray://`` or ``host:port``); ``None`` = ``RAY_ADDRESS`` or a local Ray.
    address: str | None = None
    #: ``asha`` (early stopping) or ``fifo`` (every trial runs max_epochs: the baseline to compare).
    scheduler: str = "asha"
    #: ``tpe`` (Optuna's TPE) or ``random`` (Optuna's RandomSampler: the baseline to compare).
    sampler: str = "tpe"
    verbose: int = 1
    #: Share frozen-backbone features between epochs and trials (``<search>/feature_cache``).
    feature_cache: bool = True
    #: Retries of a trial whose worker died, each from its last checkpoint.
    max_failures: int = 2
    #: The command that started the search (recorded in search.json; empty when called from Python).
    command_line: tuple[str, ...] = ()
    #: Data-parallel workers per trial (``tune_tl.training.distributed``): gloo on CPU, NCCL with one GPU each.
    workers_per_trial: int = 1

    #: Trial checkpoints kept on disk per trial (the last epoch's; resume needs nothing older).
    keep_checkpoints = 1

    @property
    def workers(self) -> int:
        """Workers each trial trains with: ``--workers-per-trial``, or one per GPU when ``--gpus-per-trial`` > 1."""
        return int(self.gpus_per_trial) if self.gpus_per_trial > 1 else self.workers_per_trial

    def validate(self) -> None:
        if self.cpus_per_trial <= 0:
            raise TuneTLError(f"--cpus-per-trial must be positive, got {self.cpus_per_trial}")
        if not 0 <= self.gpus_per_trial <= 1 and not float(self.gpus_per_trial).is_integer():
            raise TuneTLError(f"--gpus-per-trial must be a fraction in (0, 1] or a whole number, got {self.gpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise TuneTLError(f"--gpus-per-trial must not be negative, got {self.gpus_per_trial}")
        if self.max_failures < 0:
            raise TuneTLError(f"--max-failures must be 0 or more, got {self.max_failures}")
        if self.concurrency is not None and self.concurrency < 1:
            raise TuneTLError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.scheduler not in ("asha", "fifo"):
            raise TuneTLError(f"--scheduler must be 'asha' or 'fifo', got {self.scheduler!r}")
        if self.sampler not in ("tpe", "random"):
            raise TuneTLError(f"--sampler must be 'tpe' or 'random', got {self.sampler!r}")
        if self.workers_per_trial < 1:
            raise TuneTLError(f"--workers-per-trial must be at least 1, got {self.workers_per_trial}")
        if self.gpus_per_trial > 1 and self.workers_per_trial not in (1, int(self.gpus_per_trial)):
            raise TuneTLError(f"--gpus-per-trial {self.gpus_per_trial:g} trains with one worker per GPU; "
                              f"--workers-per-trial must be {int(self.gpus_per_trial)} (or left out), got {self.workers_per_trial}")
        if self.workers_per_trial > 1 and 0 < self.gpus_per_trial < 1:
            raise TuneTLError(f"--workers-per-trial {self.workers_per_trial} needs one whole GPU per worker "
                              f"(--gpus-per-trial {self.workers_per_trial}) or none (CPU); got --gpus-per-trial {self.gpus_per_trial:g}")
        if self.workers_per_trial > 1 and self.gpus_per_trial == 1:
            raise TuneTLError(f"--workers-per-trial {self.workers_per_trial} needs one GPU per worker: "
                              f"use --gpus-per-trial {self.workers_per_trial} (or 0 for CPU workers)")
        if self.name is not None and (not self.name or "/" in self.name or self.name.startswith(".")):
            raise TuneTLError(f"--name must be a plain folder name, got {self.name!r}")


@dataclass(frozen=True)
class SearchSummary:
    """What a finished search produced, for the CLI summary and for callers."""

    path: Location
    counts: dict[str, int]
    best: dict[str, Any] | None
    #: Bad image files left out under ``skip_bad_images`` (listed in ``skipped_images.txt``).
    skipped_images: int = 0


def run_search(spec: SearchSpec, options: SearchOptions = SearchOptions()) -> SearchSummary:
    """Run ``spec`` with Ray Tune + Optuna + ASHA and return where the results are.

    Example:
        >>> from tune_tl import load_space, run_search, SearchOptions
        >>> summary = run_search(load_space(), SearchOptions(output="results", name="demo"))
        >>> summary.best["best_val_acc"]  # doctest: +SKIP
    """
    options.validate()
    name = options.name or time.strftime("search-%Y%m%d-%H%M%S")
    root = Location.parse(options.output) / name
    if any((root / part).exists() for part in ("trials", "epochs", "optuna.db", "tuner.pkl")):
        raise TuneTLError(f"{root} already holds search results; choose another --name (or --output), "
                          f"or continue it with `tune-tl resume {root}`")
    if not root.is_local:
        root.check_writable()  # a missing bucket or credentials fail now, not after the data is loaded

    context, num_blocks, loaded = _prepare_context(spec)  # before Ray: bad weights or data fail here
    check_resources(options)  # connects Ray; a trial the cluster can never hold fails now, not PENDING forever
    skipped = loaded.skipped
    root.mkdir()
    if skipped:
        from tune_tl.data.validate import write_skipped

        write_skipped(skipped, root / SKIPPED_FILE)
    context = with_feature_cache(context, options, root)
    metadata = {**_metadata(spec, options, name, root), "data_loaded": loaded.description, "skipped_images": len(skipped)}
    from tune_tl.store.results import write_json_atomic

    write_json_atomic(metadata, root / "search.json")
    log.info("search %r: %d trials, up to %d epochs each; results in %s", name, spec.budget.samples, spec.budget.max_epochs, root)

    from tune_tl.search.sampler import study_file

    tuner = _build_tuner(spec, options, context, num_blocks, root, study_file(root, fresh=True))
    tuner.fit()  # a driver that dies here is continued by ``tune-tl resume`` (tune_tl.search.resume)

    write_json_atomic({**metadata, "end_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "node_ids": _node_ids()}, root / "search.json")
    return dataclasses.replace(summarize(root), skipped_images=len(skipped))


def _prepare_context(spec: SearchSpec):
    from tune_tl.data import load_data
    from tune_tl.models import build_backbone
    from tune_tl.training.recipe import TrialContext

    backbone = build_backbone(spec.backbone.name, spec.backbone.weights)
    spec.check_blocks(len(backbone.blocks))
    loaded = load_data(spec.data, spec.resolutions(), spec.seed)
    log.info("backbone %s: %d blocks, %d features", backbone.name, len(backbone.blocks), backbone.num_features)
    context = TrialContext(spec.backbone.name, backbone.features.state_dict(), loaded.data, spec.budget.max_epochs, spec.seed)
    return context, len(backbone.blocks), loaded


def with_feature_cache(context, options: SearchOptions, root: Location):
    """Point trials at the search's feature cache, unless the user turned it off: ``<search>/feature_cache``
    (shared by every node when the output is a shared folder), or a node-local folder when the output
    is an object store (features are recomputed once per node rather than read over the network)."""
    if not options.feature_cache:
        return context
    folder = root.local_path / "feature_cache" if root.is_local else root.local_mirror("feature-cache")
    return dataclasses.replace(context, feature_cache=str(folder))


def make_trainable(context, options: SearchOptions):
    """The trainable a search runs; ``tune-tl resume`` must pass Ray the same one."""
    from ray import tune

    from tune_tl.search.trainable import run_trial

    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(run_trial, context=context, workers=options.workers), resources)


def init_ray(address: str | None = None) -> None:
    """Join ``address`` (or ``$RAY_ADDRESS``), else start a fresh local Ray with no dashboard."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:  # address="local": never join a stray cluster; no dashboard, so nothing listens on the network
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)


def storage_config(root: Location) -> dict[str, Any]:
    """Ray's ``storage_path`` / ``storage_filesystem`` for the experiment folder ``root``."""
    if root.is_local:
        return {"storage_path": str(root.parent.local_path)}
    return {"storage_path": root.parent.path, "storage_filesystem": root.fs}


def _build_tuner(spec: SearchSpec, options: SearchOptions, context, num_blocks: int, root: Location, study: Path):
    import optuna
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from tune_tl.search.sampler import HonestOptunaSearch, SqliteMirror, storage_url
    from tune_tl.search.resume import SampleTarget
    from tune_tl.store.results import ParquetSink
    from tune_tl.search.schedulers import ReplayASHA

    init_ray(options.address)
    sampler = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[options.sampler](seed=spec.seed)
    searcher = HonestOptunaSearch(
        space=spec.define_by_run(num_blocks),
        metric=METRIC,
        mode=MODE,
        max_epochs=spec.budget.max_epochs,
        sampler=sampler,
        storage=storage_url(study),
        study_name=root.name,
    )
    if options.concurrency:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=options.concurrency)
    if options.scheduler == "asha":
        scheduler = ReplayASHA(  # ASHA that re-learns its rungs from the Parquet results on resume
            root,
            time_attr="epoch",
            metric=METRIC,
            mode=MODE,
            max_t=spec.budget.max_epochs,
            grace_period=spec.budget.grace_period,
            reduction_factor=spec.budget.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    callbacks = [ParquetSink(root, spec.budget.max_epochs)]
    if not root.is_local:
        callbacks.append(SqliteMirror(study, root / "optuna.db"))
    return tune.Tuner(
        make_trainable(context, options),
        tune_config=tune.TuneConfig(
            search_alg=SampleTarget(searcher),  # a SearchGenerator whose target can grow on resume
            scheduler=scheduler,
            num_samples=spec.budget.samples,
        ),
        run_config=tune.RunConfig(
            name=root.name,
            callbacks=callbacks,
            **storage_config(root),
            verbose=options.verbose,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=SearchOptions.keep_checkpoints),
        ),
    )


def summarize(root: Location) -> SearchSummary:
    """Counts by status and the best trial's row, read back from the Parquet results."""
    from tune_tl.analysis.frame import load_results

    trials = load_results(root).trials
    counts = {status: int((trials["status"] == status).sum()) for status in ("completed", "pruned", "diverged", "oom", "error")}
    best = None
    ok = trials[trials["status"].isin(["completed", "pruned"])]
    if len(ok):
        best = ok.sort_values("best_val_acc", ascending=False).iloc[0].dropna().to_dict()
    return SearchSummary(root, counts, best)


def _metadata(spec: SearchSpec, options: SearchOptions, name: str, root: Location) -> dict[str, Any]:
    import optuna
    import ray
    import timm
    import torch
    import torchvision

    return {
        "name": name,
        "space_file": spec.source,
        "space_text": spec.text,
        "options": dataclasses.asdict(options),
        "seed": spec.seed,
        # The space as run (CLI overrides applied): resume, retrain and report read these, not the text.
        "data": dataclasses.asdict(spec.data),
        "backbone": dataclasses.asdict(spec.backbone),
        "budget": dataclasses.asdict(spec.budget),
        "root": str(root),
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "timm": timm.__version__,
            "ray": ray.__version__,
            "optuna": optuna.__version__,
        },
    }


def _node_ids() -> list[str]:
    """Ids of the Ray nodes alive at the end of the search (one on a laptop)."""
    import ray

    try:
        return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    except Exception:  # metadata must never fail a finished search
        return []
