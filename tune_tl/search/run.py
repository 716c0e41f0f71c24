"""Run a search: check everything, prepare data and weights once in the driver, then fit the Ray Tune ``Tuner``.

Everything that can be wrong with the user's input is checked before Ray starts. The pieces live beside
this file: ``options`` (how to run), ``session`` (Ray), ``tuner`` (the Tuner's wiring), ``summary``
(what it produced); ``training.context.prepare_context`` prepares what every trial shares.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from tune_tl.analysis.rank import rank_prepared, select_backbones
from tune_tl.config.distributions import values_of
from tune_tl.config.params import PARAMS
from tune_tl.config.spec import SearchSpec
from tune_tl.data.validate import write_skipped
from tune_tl.search.options import SearchOptions
from tune_tl.search.ray_logs import ray_output
from tune_tl.search.resources import check_resources
from tune_tl.search.session import alive_node_ids, init_ray, versions
from tune_tl.search.summary import SearchSummary, summarize
from tune_tl.search.tuner import build_tuner
from tune_tl.search.warm_start import data_fingerprint, seed_study, warm_trials
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location
from tune_tl.training.context import TrialContext, prepare_context
from tune_tl.training.frozen_features import INPUT_VARYING_PARAMS

log = logging.getLogger(__name__)


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
        root.parent.check_writable()  # a missing bucket or credentials fail now, not after the data is loaded (nothing left in <name>)
    # One driver per folder (an unwritable local --output fails here, before the data); Ray's log lines go to <search>/logs/ray.log.
    with SearchRun(root).lock(), ray_output(root, options.verbose):
        SearchRun(root).check_new()  # a same-name search may have finished while we waited to start
        return _run_locked(spec, options, name, root)


def _run_locked(spec: SearchSpec, options: SearchOptions, name: str, root: Location) -> SearchSummary:
    prepared = prepare_context(spec)  # before Ray: bad weights or data fail here
    ranking = None
    if spec.backbone_selection is not None and spec.backbone.is_choice:
        ranking = rank_prepared(prepared, max(spec.resolutions()))  # one frozen-feature pass per listed backbone
        spec = select_backbones(spec, ranking)
        prepared = prepared.keep(spec.backbone.names)
    loaded = prepared.loaded
    fingerprint = data_fingerprint(loaded.data)
    warm = warm_trials(options.warm_start, fingerprint, spec.define_by_run(prepared.num_blocks)) if options.warm_start else []
    init_ray(options.address, options.verbose)
    check_resources(options)  # what the cluster really has: a trial that can never start would wait forever
    run = SearchRun.create(root, spec, options, {**versions(), "data_loaded": loaded.description, "skipped_images": len(loaded.skipped),
                                                     "classes": list(loaded.data.classes), "data_fingerprint": fingerprint,
                                                     "backbone_ranking": None if ranking is None else ranking.to_dict("records")})
    if loaded.skipped:
        write_skipped(loaded.skipped, run.skipped_file)
    context = with_feature_cache(prepared.context, options, root)
    if options.feature_cache:
        _log_uncacheable(spec)
    log.info("search %r: %d trials, up to %d epochs each; results in %s", name, spec.budget.samples, spec.budget.max_epochs, root)

    study = run.study_file(fresh=True)
    if warm:
        seed_study(study, root.name, warm)  # TPE starts from the earlier trials
    tuner = build_tuner(spec, options, context, prepared.num_blocks, root, study)
    started = time.monotonic()
    tuner.fit()  # a driver that dies here is continued by ``tune-tl resume`` (tune_tl.search.resume)
    timed_out = ended_by_time_budget(spec, time.monotonic() - started)

    run.update_metadata(end_time=time.strftime("%Y-%m-%dT%H:%M:%S%z"), node_ids=alive_node_ids(), ended_by_time_budget=timed_out)
    return summarize(root, len(loaded.skipped), timed_out)


def ended_by_time_budget(spec: SearchSpec, elapsed: float) -> bool:
    """Whether Ray's ``time_budget_s`` (``budget.time``) is what ended a ``fit`` that took ``elapsed`` s."""
    return spec.budget.time is not None and elapsed >= spec.budget.time


def with_feature_cache(context: TrialContext, options: SearchOptions, root: Location) -> TrialContext:
    """Point trials at the search's feature cache, unless the user turned it off: ``<search>/feature_cache``
    (shared by every node when the output is a shared folder), or a node-local folder when the output
    is an object store (features are recomputed once per node rather than read over the network)."""
    if not options.feature_cache:
        return context
    return dataclasses.replace(context, feature_cache=str(SearchRun(root).feature_cache_dir()))


def _log_uncacheable(spec: SearchSpec) -> None:
    """Say up front which parameters keep the trials that choose them off the frozen-feature cache."""
    names = [p.name for p in spec.params
             if p.name in INPUT_VARYING_PARAMS and any(v != PARAMS[p.name].default for v in values_of(p.dist))]
    if names:
        log.info("feature cache: trials with %s on change their inputs every epoch and train without it", ", ".join(names))


