"""The Ray Tune ``Tuner`` of a search: the trainable with its resources, the Optuna searcher, the scheduler
and the driver-side callbacks (Parquet sink, checkpoint retention, time budget, study mirror, progress view).

``tune-tl resume`` restores the same Tuner from ``tuner.pkl`` and passes :func:`make_trainable` again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ray import tune
from ray.tune.search import ConcurrencyLimiter

from tune_tl.search.admission import BudgetClock, NotStartedRows, search_admission, whole_model_fits
from tune_tl.search.budget import CloseOpenTrials
from tune_tl.search.cost_sampler import CandidateCost, CostCooling
from tune_tl.search.options import METRIC, MODE, SearchOptions
from tune_tl.search.plan import SearchPlan
from tune_tl.search.progress import SearchProgress
from tune_tl.search.resources import trial_slots
from tune_tl.search.retention import CheckpointRetention
from tune_tl.search.sampler import HonestOptunaSearch, SampleTarget, SqliteMirror, enqueue_textbook, make_sampler, storage_url
from tune_tl.search.schedulers import make_scheduler
from tune_tl.search.session import storage_config
from tune_tl.search.trainable import run_trial
from tune_tl.store.results import ParquetSink
from tune_tl.store.search_run import SearchRun, trial_folder_name
from tune_tl.store.storage import Location
from tune_tl.training.context import TrialContext


def make_trainable(context: TrialContext, options: SearchOptions, ended: frozenset[str] = frozenset()):
    """The trainable a search runs; ``tune-tl resume`` passes Ray the same one, with the trials it must not train
    again (``ended``: ``search.reconcile``)."""
    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(run_trial, context=context, workers=options.workers, ended=ended), resources)


def build_tuner(plan: SearchPlan, options: SearchOptions, context: TrialContext, root: Location, study: Path) -> tune.Tuner:
    """The search's Tuner, writing into ``root``; ``study`` is the Optuna SQLite file on this machine.

    ``plan`` is the resolved space, with the cost model that the sampler and cost-aware ASHA decide with.
    """
    spec, costs = plan.spec, plan.cost_model
    clock = BudgetClock(spec.budget.time, spec.budget.samples)  # the Tuner's budget: what Ray's time_budget_s counts
    admission = search_admission(root, costs, clock)
    # What admission refuses is never sampled, not only refused: dominated configs, and those that cannot finish in time.
    candidate_cost = dataclasses.replace(CandidateCost.for_search(plan), excluded=admission.excludes)
    searcher = HonestOptunaSearch(
        space=plan.space,
        metric=METRIC,
        mode=MODE,
        max_epochs=spec.budget.max_epochs,
        sampler=make_sampler(options.sampler, spec, candidate_cost, CostCooling(clock)),
        storage=storage_url(study),
        study_name=root.name,
        admission=admission,
        clock=clock,
        on_refused=NotStartedRows(root),
    )
    if options.textbook_start:  # the best-ranked backbone is the plan's first (search.probes.ranked_plan)
        fits = whole_model_fits(costs, SearchRun(root).probe_records, spec.budget.time, plan.first.name, options.cpus_per_trial,
                                options.gpus_per_trial)
        enqueue_textbook(searcher, plan, after_probes=bool(context.probe_heads), whole_model_fits=fits)
    concurrency = options.concurrency or trial_slots(options)
    if concurrency:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=concurrency)
    sink = ParquetSink(root, spec.budget.max_epochs)
    # After the sink: retention reads the rows the sink has just flushed.
    callbacks = [sink, CheckpointRetention(root, max(spec.budget.keep_checkpoints, options.recheck))]
    if spec.budget.time is not None:
        # First: trials the time budget stopped get their rows before the sink's final flush.
        callbacks.insert(0, CloseOpenTrials(sink, spec.budget.time, storage_url(study), root.name))
    if not root.is_local:
        callbacks.append(SqliteMirror(study, SearchRun(root).study_location))
    callbacks.append(SearchProgress(root, spec.budget.samples, spec.budget.max_epochs, spec.budget.time, live=not options.verbose))
    return tune.Tuner(
        make_trainable(context, options),
        tune_config=tune.TuneConfig(
            search_alg=SampleTarget(searcher),  # a SearchGenerator whose target can grow on resume
            scheduler=make_scheduler(options.scheduler, spec, root, metric=METRIC, mode=MODE, cost_model=costs,
                                     unit=plan.rung_unit),
            num_samples=spec.budget.samples,
            time_budget_s=spec.budget.time,  # stops starting trials and ends running ones when it is up
            # On this machine's own Ray a trial that ends hands its process to the next one: no new Python importing
            # torch per trial (seconds of CPU each, which a 10-minute budget and the test suite both pay). Not on a
            # cluster (--address): a reused actor keeps its node, and a two-node search then ran every trial on one.
            reuse_actors=options.address is None,
            trial_name_creator=trial_folder_name,  # short names and folders: the trial id, not the config
            trial_dirname_creator=trial_folder_name,
        ),
        run_config=tune.RunConfig(
            name=root.name,
            callbacks=callbacks,
            **storage_config(root),
            verbose=options.verbose,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            # While a trial can run, Ray keeps its best epoch's checkpoint by val_acc (for export) and always its latest
            # (for a retry or a resume): at most two. Once it ended, CheckpointRetention keeps what the top trials need.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE),
        ),
    )
