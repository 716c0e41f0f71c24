"""Run a search: check everything, prepare data and weights once in the driver, then fit the Ray Tune ``Tuner``.

Everything that can be wrong with the user's input is checked before Ray starts. The pieces live beside
this file: ``options`` (how to run), ``session`` (Ray), ``tuner`` (the Tuner's wiring), ``summary``
(what it produced); ``training.context.prepare_context`` prepares what every trial shares.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from tune_tl.config.distributions import values_of
from tune_tl.config.params import PARAMS
from tune_tl.config.spec import DEFAULT_TIME_BUDGET, SearchSpec, with_budget
from tune_tl.data.manifest import check_unchanged, data_fingerprint, record_data
from tune_tl.data.validate import write_skipped
from tune_tl.search.admission import stopped_for_time
from tune_tl.search.finish import finish_search, wrap_up_seconds
from tune_tl.search.held_out import without_test
from tune_tl.search.options import SearchOptions
from tune_tl.search.plan import resolve_plan
from tune_tl.search.probes import finished_probes, ranked_plan, ranking, run_probes, study_trials, trials_context
from tune_tl.search.rank import rank_prepared
from tune_tl.search.ray_logs import ray_output
from tune_tl.search.resources import check_resources
from tune_tl.search.session import alive_node_ids, check_address, init_ray, versions
from tune_tl.search.summary import SearchSummary, fine_tune_need, summarize
from tune_tl.search.tuner import build_tuner
from tune_tl.search.warm_start import seed_study, warm_trials
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location
from tune_tl.training.batches import check_frozen_dtype
from tune_tl.training.context import prepare_context
from tune_tl.training.frozen_features import INPUT_VARYING_PARAMS

log = logging.getLogger(__name__)


def run_search(spec: SearchSpec, options: SearchOptions | None = None) -> SearchSummary:
    """Run ``spec`` with Ray Tune + Optuna + ASHA and return where the results are.

    Example:
        >>> from tune_tl import load_space, run_search, SearchOptions
        >>> summary = run_search(load_space(), SearchOptions(output="results", name="demo"))
        >>> summary.best["best_val_acc"]  # doctest: +SKIP
    """
    options = options or SearchOptions()
    options.validate()
    check_frozen_dtype()
    check_address(options.address)  # a bad --address fails in seconds, before the data is decoded
    name = options.name or time.strftime("search-%Y%m%d-%H%M%S")
    root = Location.parse(options.output) / name
    SearchRun(root).check_new()
    if not root.is_local:
        root.parent.check_writable()  # a missing bucket or credentials fail now, not after the data is loaded (nothing left in <name>)
    # One driver per folder (an unwritable local --output fails here, before the data); Ray's log lines go to <search>/logs/ray.log.
    with SearchRun(root).lock(), ray_output(root, options.verbose):
        SearchRun(root).check_new()  # a same-name search may have finished while we waited to start
        return _run_locked(spec, options, name, root)


def continue_stage0(run: SearchRun, samples: int | None = None) -> SearchSummary:
    """Go on with a search whose driver stopped during or right after its stage-0 probes, before Ray Tune started
    (``tune-tl resume`` calls this): finished probes are kept, the others run, then the Tuner as in a new search.

    The time budget left is the search's own minus the seconds its kept probes took.
    """
    spec, options = run.spec, SearchOptions(**run.options)
    if samples is not None:
        spec = with_budget(spec, samples=max(samples, spec.budget.samples))
    with run.lock(), ray_output(run.root, options.verbose):
        log.info("resuming search %s: stopped in stage 0, before its first Ray Tune trial", run.root)
        return _run_locked(spec, options, run.root.name, run.root, resumed=run)


def _run_locked(spec: SearchSpec, options: SearchOptions, name: str, root: Location, resumed: SearchRun | None = None) -> SearchSummary:
    started = time.monotonic()
    prepared, tests = without_test(prepare_context(spec))  # before Ray: bad weights or data fail here; test images stay here
    plan = resolve_plan(spec, prepared, feature_cache=options.feature_cache)  # block bounds a backbone cannot meet fail here
    if resumed is not None:
        check_unchanged(resumed, prepared.loaded, "tune-tl resume", lambda: data_fingerprint(prepared.loaded.data))
    done = finished_probes(resumed, plan, prepared) if resumed is not None else {}
    spent = sum(p.seconds for p in done.values())
    deadline = None if spec.budget.time is None else started + spec.budget.time - spent
    loaded = prepared.loaded
    fingerprint = data_fingerprint(loaded.data)
    if options.warm_start:
        warm_trials(options.warm_start, fingerprint, plan.space)  # a bad folder fails here
    init_ray(options.address, options.verbose)
    check_resources(options)  # what the cluster really has: a trial that can never start would wait forever
    run = resumed or SearchRun.create(root, spec, options, {**versions(), "data_loaded": loaded.description,
                                                             "skipped_images": len(loaded.skipped), "classes": list(loaded.data.classes),
                                                             "data_fingerprint": fingerprint})
    if loaded.skipped:
        write_skipped(loaded.skipped, run.skipped_file)
    record_data(run, loaded)  # the data manifest (resume, retrain, --recheck check it) and duplicates.csv
    _log_budget(spec)
    cache = feature_cache(options, root)
    probes = run_probes(plan, prepared, run, cache, deadline, done) if options.probes else []
    probe_records = [p.record() for p in probes]  # search.json's, the end's reserve and the fine-tune need price by them
    if cache is not None:  # the probes' one pass kept boundaries that fine-tunes start from (training.forward_once)
        plan = plan.with_probed_boundaries(prepared, [(p.backbone, p.resolution) for p in probes if p.subset is None])
    probed = prepared.backbones  # every probe's backbone, for its val predictions at the end
    table = ranking(probes, prepared) if probes else None
    if table is None and spec.backbone_selection is not None and spec.backbone.is_choice:
        table = rank_prepared(prepared, max(plan.resolutions))  # no probes: rank with the same measurement, unrecorded
    if table is not None:  # the best-ranked backbone first (backbone_selection keeps only the top ones)
        plan, prepared = ranked_plan(plan, prepared, table)
        spec = plan.spec
        run.update_metadata(backbone=dataclasses.asdict(spec.backbone), probes=probe_records,
                            backbone_ranking=table.to_dict("records") if spec.backbone_selection is not None else None)
    context = trials_context(prepared, run, cache)
    if options.feature_cache:
        _log_uncacheable(spec)
    space = plan.space
    seeded = study_trials(probes, space) + (warm_trials(options.warm_start, fingerprint, space) if options.warm_start else [])
    study = run.study_file(fresh=True)
    if resumed is not None:  # a stopped stage 0 may have seeded it already: Ray never read it, so it starts anew
        study.unlink(missing_ok=True)
    if seeded:
        seed_study(study, root.name, seeded)  # TPE starts from the probes and the earlier searches' trials
    before_tuner = time.monotonic() - started
    reserve = 0.0
    if deadline is not None:  # the end's forward passes come out of the budget, not after it
        kept = min(spec.budget.samples, max(spec.budget.keep_checkpoints, options.recheck))
        test_images = max((len(s.test_y) for s in tests.values()), default=0)
        reserve = wrap_up_seconds(plan.cost_model, probe_records, kept, test_images, plan.first.name, spec.budget.time)
        deadline -= reserve
        if reserve:
            log.info("time budget: %.0f s of it kept for the end (the test score of the shipped model and the ensemble)", reserve)
    remaining = None if deadline is None else deadline - time.monotonic()
    timed_out = remaining is not None and remaining <= 0
    if not timed_out:
        log.info("search %r: %d trials, up to %d epochs each; results in %s", name, spec.budget.samples, spec.budget.max_epochs, root)
        tuner = build_tuner(dataclasses.replace(plan, spec=with_budget(spec, time=remaining)), options, context, root, study)
        tuner.fit()  # a driver that dies here is continued by ``tune-tl resume`` (tune_tl.search.resume)
        # Ray's clock ran out, or admission stopped starting trials because no first epoch fit in the time left.
        timed_out = deadline is not None and (time.monotonic() >= deadline or stopped_for_time(run.trials(), spec.budget.samples))
    finish_search(run, prepared.context.data.splits, tests, probed, cache)  # ensemble on val; test scored once, never to choose
    run.record_end(node_ids=alive_node_ids(), ended_by_time_budget=timed_out)
    need = None
    if timed_out:  # the summary says what budget one fine-tune epoch needs, if none finished
        # what the budget must hold besides that epoch: the data and probes before the Tuner, the end after it
        need = fine_tune_need(plan, probe_records, before_tuner + reserve, options.cpus_per_trial, options.gpus_per_trial)
    return summarize(root, len(loaded.skipped), timed_out, need)


def _log_budget(spec: SearchSpec) -> None:
    """Say up front how long the search may take: the time budget (the default one, if not set) or none."""
    if spec.budget.time is None:
        log.info("time budget: none (budget.time: none); the search runs all %d trials", spec.budget.samples)
    else:
        log.info("time budget: %s%s; set it with --time-budget SECONDS (or none)", _minutes(spec.budget.time),
                 " (the default)" if spec.budget.time == DEFAULT_TIME_BUDGET else "")


def _minutes(seconds: float) -> str:
    return f"{seconds:g} s ({seconds / 60:.1f} min)" if seconds >= 60 else f"{seconds:g} s"


def ended_by_time_budget(spec: SearchSpec, elapsed: float) -> bool:
    """Whether Ray's ``time_budget_s`` (``budget.time``) is what ended a ``fit`` that took ``elapsed`` s."""
    return spec.budget.time is not None and elapsed >= spec.budget.time


def feature_cache(options: SearchOptions, root: Location) -> str | None:
    """The search's feature cache, unless the user turned it off: ``<search>/feature_cache`` (shared by every
    node when the output is a shared folder), or a node-local folder when the output is an object store
    (features are recomputed once per node rather than read over the network)."""
    return str(SearchRun(root).feature_cache_dir()) if options.feature_cache else None


def _log_uncacheable(spec: SearchSpec) -> None:
    """Say up front which parameters keep the trials that choose them off the frozen-feature cache."""
    names = [p.name for p in spec.params
             if p.name in INPUT_VARYING_PARAMS and any(v != PARAMS[p.name].default for v in values_of(p.dist))]
    if names:
        log.info("feature cache: trials with %s on change their inputs every epoch and train without it", ", ".join(names))


