"""Build and run the Ray Tune search: data and weights once in the driver, then the Tuner.

Everything that can be wrong with the user's input is checked here before Ray starts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune_tl.errors import TuneTLError
from tune_tl.config.space import SearchSpec
from tune_tl.store.search_run import SearchRun
from tune_tl.search.resources import check_resources
from tune_tl.store.storage import Location

log = logging.getLogger(__name__)

METRIC, MODE = "val_acc", "max"  # the one place the objective is named
#: Longest ``--name``: file names are limited to 255 bytes and Ray's trial folders add to it.
MAX_NAME_BYTES = 100


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
    #: ``cost-asha`` (ASHA on training-seconds rungs), ``asha`` (epoch rungs: the old default), ``pasha``
    #: (progressive maximum budget) or ``fifo`` (every trial runs max_epochs: the baseline to compare).
    scheduler: str = "cost-asha"
    #: ``tpe`` (Optuna's TPE) or ``random`` (Optuna's RandomSampler: the baseline to compare).
    sampler: str = "tpe"
    #: Enqueue the textbook recipes (fine-tune, linear probe, LP→FT) as the first trials.
    textbook_start: bool = True
    #: 0: the progress view, Ray's log in ``<search>/logs/ray.log``; 1 or 2: Ray's own stream (``--verbose``).
    verbose: int = 0
    #: Share frozen-backbone features between epochs and trials (``<search>/feature_cache``).
    feature_cache: bool = True
    #: Retries of a trial whose worker died, each from its last checkpoint.
    max_failures: int = 2
    #: Earlier searches on the same data whose finished trials seed this search's Optuna study.
    warm_start: tuple[str, ...] = ()
    #: The command that started the search (recorded in search.json; empty when called from Python).
    command_line: tuple[str, ...] = ()
    #: Data-parallel workers per trial (``tune_tl.training.distributed``): gloo on CPU, NCCL with one GPU each.
    workers_per_trial: int = 1

    #: Best-scoring (by val_acc) checkpoints kept per trial; Ray always keeps the latest as well, which
    #: resume restores from, so a trial holds at most two: its latest and its best epoch (for export).
    keep_checkpoints = 1

    @property
    def workers(self) -> int:
        """Workers each trial trains with: ``--workers-per-trial``, or one per GPU when ``--gpus-per-trial`` > 1."""
        return int(self.gpus_per_trial) if self.gpus_per_trial > 1 else self.workers_per_trial

    def validate(self) -> None:
        for flag, value in (("--cpus-per-trial", self.cpus_per_trial), ("--gpus-per-trial", self.gpus_per_trial)):
            if not math.isfinite(value):
                raise TuneTLError(f"{flag} must be a finite number, got {value}")
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
        from tune_tl.search.schedulers import SCHEDULERS

        if self.scheduler not in SCHEDULERS:
            raise TuneTLError(f"--scheduler must be one of {', '.join(SCHEDULERS)}; got {self.scheduler!r}")
        if self.sampler not in ("tpe", "random", "tpe-classic"):
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
        if self.name is not None and (not self.name or "/" in self.name or "\\" in self.name or self.name.startswith(".")
                                      or not self.name.isprintable()):
            raise TuneTLError(f"--name must be a plain folder name, got {self.name!r}")
        if self.name is not None and len(self.name.encode()) > MAX_NAME_BYTES:
            raise TuneTLError(f"--name is {len(self.name.encode())} bytes long; use at most {MAX_NAME_BYTES} "
                              f"(Ray adds trial folders and file names below it)")


@dataclass(frozen=True)
class SearchSummary:
    """What a finished search produced, for the CLI summary and for callers."""

    path: Location
    counts: dict[str, int]
    best: dict[str, Any] | None
    #: Bad image files left out under ``skip_bad_images`` (listed in ``skipped_images.txt``).
    skipped_images: int = 0
    #: Trials whose inputs change every epoch (augmentation, auto_augment, mixup, cutmix): no feature cache.
    uncached_trials: int = 0
    #: ``budget.time`` seconds (``--time-budget``) ran out before the search had run all its trials.
    ended_by_time_budget: bool = False


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
    SearchRun(root).check_new()
    if not root.is_local:
        root.check_writable()  # a missing bucket or credentials fail now, not after the data is loaded
    from tune_tl.search.progress import ray_output

    # One driver per folder (an unwritable local --output fails here, before the data); Ray's log lines go to <search>/logs/ray.log.
    with SearchRun(root).lock(), ray_output(root, options.verbose):
        SearchRun(root).check_new()  # a same-name search may have finished while we waited to start
        return _run_locked(spec, options, name, root)


def _run_locked(spec: SearchSpec, options: SearchOptions, name: str, root: Location) -> SearchSummary:
    ranking = None
    if spec.backbone_selection is not None and spec.backbone.is_choice:
        from tune_tl.analysis.rank import rank_backbones, select_backbones

        ranking = rank_backbones(spec)  # one frozen-feature pass per listed backbone
        spec = select_backbones(spec, ranking)
    context, num_blocks, loaded = _prepare_context(spec)  # before Ray: bad weights or data fail here
    from tune_tl.search.warm_start import data_fingerprint, seed_study, warm_trials

    fingerprint = data_fingerprint(loaded.data)
    warm = warm_trials(options.warm_start, fingerprint, spec.define_by_run(num_blocks)) if options.warm_start else []
    init_ray(options.address, options.verbose)
    check_resources(options)  # what the cluster really has: a trial that can never start would wait forever
    skipped = loaded.skipped
    run = SearchRun.create(root, spec, options, {**_metadata(), "data_loaded": loaded.description, "skipped_images": len(skipped),
                                                     "classes": list(loaded.data.classes), "data_fingerprint": fingerprint,
                                                     "backbone_ranking": None if ranking is None else ranking.to_dict("records")})
    if skipped:
        from tune_tl.data.validate import write_skipped

        write_skipped(skipped, run.skipped_file)
    context = with_feature_cache(context, options, root)
    if options.feature_cache:
        _log_uncacheable(spec)
    log.info("search %r: %d trials, up to %d epochs each; results in %s", name, spec.budget.samples, spec.budget.max_epochs, root)

    study = run.study_file(fresh=True)
    if warm:
        seed_study(study, root.name, warm)  # TPE starts from the earlier trials
    tuner = _build_tuner(spec, options, context, num_blocks, root, study)
    started = time.monotonic()
    tuner.fit()  # a driver that dies here is continued by ``tune-tl resume`` (tune_tl.search.resume)
    timed_out = ended_by_time_budget(spec, time.monotonic() - started)

    run.update_metadata(end_time=time.strftime("%Y-%m-%dT%H:%M:%S%z"), node_ids=_node_ids(), ended_by_time_budget=timed_out)
    return dataclasses.replace(summarize(root), skipped_images=len(skipped), ended_by_time_budget=timed_out)


def ended_by_time_budget(spec: SearchSpec, elapsed: float) -> bool:
    """Whether Ray's ``time_budget_s`` (``budget.time``) is what ended a ``fit`` that took ``elapsed`` s."""
    return spec.budget.time is not None and elapsed >= spec.budget.time


def _prepare_context(spec: SearchSpec):
    from tune_tl.data import load_data
    from tune_tl.models import build_backbone
    from tune_tl.training.recipe import TrialContext

    backbones = {name: build_backbone(name, spec.backbone.weights) for name in spec.backbone.names}
    num_blocks = {name: len(b.blocks) for name, b in backbones.items()}
    spec.check_blocks(num_blocks)
    loaded = load_data(spec.data, spec.resolutions(), spec.seed)
    for b in backbones.values():
        log.info("backbone %s: %d blocks, %d features", b.name, len(b.blocks), b.num_features)
    states = {name: b.features.state_dict() for name, b in backbones.items()}
    first = spec.backbone.names[0]
    context = TrialContext(first, states[first], loaded.data, spec.budget.max_epochs, spec.seed,
                           backbone_states=states if spec.backbone.is_choice else {})
    return context, num_blocks, loaded


def with_feature_cache(context, options: SearchOptions, root: Location):
    """Point trials at the search's feature cache, unless the user turned it off: ``<search>/feature_cache``
    (shared by every node when the output is a shared folder), or a node-local folder when the output
    is an object store (features are recomputed once per node rather than read over the network)."""
    if not options.feature_cache:
        return context
    return dataclasses.replace(context, feature_cache=str(SearchRun(root).feature_cache_dir()))


def _log_uncacheable(spec: SearchSpec) -> None:
    """Say up front which parameters keep the trials that choose them off the frozen-feature cache."""
    from tune_tl.config.params import PARAMS
    from tune_tl.config.space import Choice, Fixed
    from tune_tl.training.recipe import INPUT_VARYING_PARAMS

    def may_be_on(p) -> bool:
        d, off = p.dist, PARAMS[p.name].default
        values = (d.value,) if isinstance(d, Fixed) else d.values if isinstance(d, Choice) else (d.low, d.high)
        return any(v != off for v in values)

    names = [p.name for p in spec.params if p.name in INPUT_VARYING_PARAMS and may_be_on(p)]
    if names:
        log.info("feature cache: trials with %s on change their inputs every epoch and train without it", ", ".join(names))


def make_trainable(context, options: SearchOptions):
    """The trainable a search runs; ``tune-tl resume`` must pass Ray the same one."""
    from ray import tune

    from tune_tl.search.trainable import run_trial

    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(run_trial, context=context, workers=options.workers), resources)


def init_ray(address: str | None = None, verbose: int = 1) -> None:
    """Join ``address`` (or ``$RAY_ADDRESS``), else start a fresh local Ray with no dashboard.

    Unless ``verbose``, what trial processes print stays in Ray's session logs (``/tmp/ray/session_*/logs``)
    instead of streaming to this terminal: the progress view reports each trial's outcome and error.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    quiet = {} if verbose else {"log_to_driver": False}
    if address:
        ray.init(address=address, logging_level=logging.WARNING, **quiet)
    else:  # address="local": never join a stray cluster; no dashboard, so nothing listens on the network
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, **quiet)


def storage_config(root: Location) -> dict[str, Any]:
    """Ray's ``storage_path`` / ``storage_filesystem`` for the experiment folder ``root``."""
    if root.is_local:
        return {"storage_path": str(root.parent.local_path)}
    return {"storage_path": root.parent.path, "storage_filesystem": root.fs}


def _build_tuner(spec: SearchSpec, options: SearchOptions, context, num_blocks: dict[str, int], root: Location, study: Path):
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from tune_tl.search.sampler import HonestOptunaSearch, SampleTarget, SqliteMirror, enqueue_textbook, make_sampler, storage_url
    from tune_tl.store.results import ParquetSink
    from tune_tl.search.schedulers import make_scheduler
    from tune_tl.search.progress import SearchProgress, trial_name

    init_ray(options.address, options.verbose)
    sampler = make_sampler(options.sampler, spec)
    searcher = HonestOptunaSearch(
        space=spec.define_by_run(num_blocks),
        metric=METRIC,
        mode=MODE,
        max_epochs=spec.budget.max_epochs,
        sampler=sampler,
        storage=storage_url(study),
        study_name=root.name,
    )
    if options.textbook_start:
        enqueue_textbook(searcher, spec, num_blocks)
    if options.concurrency:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=options.concurrency)
    scheduler = make_scheduler(options.scheduler, spec, root, metric=METRIC, mode=MODE)
    sink = ParquetSink(root, spec.budget.max_epochs)
    callbacks = [sink]
    if spec.budget.time is not None:
        from tune_tl.search.budget import CloseOpenTrials

        # First: trials the time budget stopped get their rows before the sink's final flush.
        callbacks.insert(0, CloseOpenTrials(sink, spec.budget.time, storage_url(study), root.name))
    if not root.is_local:
        callbacks.append(SqliteMirror(study, SearchRun(root).study_location))
    callbacks.append(SearchProgress(root, spec.budget.samples, spec.budget.max_epochs, spec.budget.time, live=not options.verbose))
    return tune.Tuner(
        make_trainable(context, options),
        tune_config=tune.TuneConfig(
            search_alg=SampleTarget(searcher),  # a SearchGenerator whose target can grow on resume
            scheduler=scheduler,
            num_samples=spec.budget.samples,
            time_budget_s=spec.budget.time,  # stops starting trials and ends running ones when it is up
            trial_name_creator=trial_name,  # short names and folders: the trial id, not the config
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=root.name,
            callbacks=callbacks,
            **storage_config(root),
            verbose=options.verbose,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            # Scored by val_acc: Ray keeps the best epoch's checkpoint (for export) and always the latest (for restore).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=SearchOptions.keep_checkpoints, checkpoint_score_attribute=METRIC,
                                                    checkpoint_score_order=MODE),
        ),
    )


def summarize(root: Location) -> SearchSummary:
    """Counts by status and the best trial's row, read back from the Parquet results."""
    from tune_tl.analysis.frame import load_results
    from tune_tl.store.schema import STATUSES

    trials = load_results(root).trials
    counts = {status: int((trials["status"] == status).sum()) for status in STATUSES}
    best = None
    ok = trials[trials["status"].isin(["completed", "pruned"]) & trials["best_val_acc"].notna()]
    if len(ok):
        best = ok.sort_values("best_val_acc", ascending=False).iloc[0].dropna().to_dict()
    return SearchSummary(root, counts, best, uncached_trials=_uncached_trials(trials))


def _uncached_trials(trials) -> int:
    """How many trials could not use the frozen-feature cache because their inputs change every epoch."""
    from tune_tl.config.params import PARAMS, TrialConfig
    from tune_tl.training.recipe import inputs_vary

    names = [n for n in PARAMS if n in trials.columns]
    rows = trials[names].astype(object).where(trials[names].notna(), None).to_dict("records")
    return sum(inputs_vary(TrialConfig.from_dict({k: PARAMS[k].type(v) for k, v in row.items() if v is not None})) for row in rows)


def _metadata() -> dict[str, Any]:
    """Where and with what the search ran (``SearchRun.create`` adds the spec and options)."""
    import optuna
    import ray
    import timm
    import torch
    import torchvision

    return {
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
