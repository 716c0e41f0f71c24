"""Continue a search whose driver died, or extend a finished one, through Ray Tune's own restore.

``tune.Tuner.restore`` brings back the trials (unfinished ones continue from their last epoch
checkpoint), the searcher (the Optuna study and sampler, pickled by Ray with the experiment), the
scheduler as it was created, and the Parquet sink. Before it does, ``search.reconcile`` settles the
study, the Parquet tables and Ray's snapshot, which a killed driver leaves out of step (trials that ended
after Ray's last snapshot are not run again, nor told to the study twice). What Ray does not restore is
rebuilt here or by the objects themselves: the trial context (data, backbone weights) from the search's
record (``SearchRun.spec``), ASHA's rung records (``ReplayASHA`` replays the Parquet epochs), the
searcher's view of each trial (from the study) and the sink's bookkeeping (``setup``).

    >>> resume_search("results/demo")               # doctest: +SKIP
    >>> resume_search("results/demo", samples=20)   # 20 trials in all  # doctest: +SKIP

A search stopped during its stage-0 probes, before Ray Tune started, has nothing for Ray to restore: it goes
on from its finished probes instead (``search.run.continue_stage0``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from ray import tune

from tune_tl.data.manifest import check_unchanged, data_fingerprint
from tune_tl.errors import TuneTLError
from tune_tl.search.finish import finish_search
from tune_tl.search.held_out import without_test
from tune_tl.search.options import SearchOptions
from tune_tl.search.plan import resolve_plan
from tune_tl.search.probes import trials_context
from tune_tl.search.ray_logs import ray_output
from tune_tl.search.reconcile import reconcile
from tune_tl.search.resources import check_resources
from tune_tl.search.run import continue_stage0, feature_cache
from tune_tl.search.sampler import SampleTarget, storage_url
from tune_tl.search.session import check_address, init_ray, storage_config
from tune_tl.search.summary import SearchSummary, summarize
from tune_tl.search.tuner import make_trainable
from tune_tl.store.search_run import SearchRun
from tune_tl.training.batches import check_frozen_dtype
from tune_tl.training.context import prepare_context

log = logging.getLogger(__name__)


def resume_search(path: str | Path, samples: int | None = None, space: str | Path | None = None) -> SearchSummary:
    """Continue the search in ``path`` until it has ``samples`` trials (default: its own budget); ``space``: its
    ``.py`` space file, which the user names (``--space``): code is never imported from the results folder.

    Trusts the folder's Ray state: Ray unpickles ``tuner.pkl`` (see docs/security.md).
    """
    run = SearchRun(path, space)
    stage0 = run.stopped_in_stage0()  # killed during its probes: nothing for Ray to restore yet
    if not stage0:
        run.check_resumable()  # a folder that is not a search is named before anything is created
    run.spec  # noqa: B018 - a .py space without --space (or a changed one) is refused before the lock or Ray
    check_frozen_dtype()
    check_address(run.options.get("address"))
    if stage0:
        return continue_stage0(run, samples)
    with run.lock():  # never two drivers on one folder (a running search, or a second resume)
        return _resume_locked(run, samples)


def _resume_locked(run: SearchRun, samples: int | None) -> SearchSummary:
    spec = run.spec
    target = max(samples or 0, spec.budget.samples)
    if samples is not None and samples < spec.budget.samples:
        raise TuneTLError(f"--samples {samples} is fewer than the search's {spec.budget.samples} trials; give at least that many")
    options = SearchOptions(**run.options)
    root = run.root
    prepared, tests = without_test(prepare_context(spec))  # before Ray: bad weights or data fail here; test images stay here
    check_unchanged(run, prepared.loaded, "tune-tl resume", lambda: data_fingerprint(prepared.loaded.data))
    plan = resolve_plan(spec, prepared, feature_cache=options.feature_cache)
    context = trials_context(prepared, run, feature_cache(options, root))
    log.info("resuming search %s: %d trials in all", root, target)
    study = run.study_file(fresh=False)  # an object store's study: fetch its copy before Ray unpickles the searcher
    with ray_output(root, options.verbose):  # Ray's log lines: <search>/logs/ray.log
        init_ray(options.address, options.verbose)
        check_resources(options)
        # The study, the Parquet tables and Ray's snapshot agree before Ray restores anything.
        reconciled = reconcile(run, optuna.load_study(study_name=root.name, storage=storage_url(study)),
                               plan.space, spec.budget.max_epochs)
        with SampleTarget.extending(target, reconciled):
            tuner = tune.Tuner.restore(root.path, trainable=make_trainable(context, options, reconciled.ended), resume_unfinished=True,
                                       resume_errored=False, storage_filesystem=storage_config(root).get("storage_filesystem"))
            tuner.fit()
        finish_search(run, prepared.context.data.splits, tests, prepared.backbones, context.feature_cache)

    run.record_resume(target)
    return summarize(root)
