"""Ray's ``OptunaSearch`` with honest trial states and a study persisted in the search folder.

Ray's searcher tells Optuna every finished trial as COMPLETE with its last value, so a trial that ASHA
stopped after one epoch looks like a finished trial with a poor score, and TPE learns from partial
results as if they were final. :class:`HonestOptunaSearch` instead:

* reports every epoch's metric as an intermediate value (``trial.report(value, step=epoch)``);
* tells a trial that ran ``max_epochs`` as COMPLETE with its **best** epoch's value (the same number as
  ``best_val_acc`` in the Parquet ``trials`` table, i.e. the checkpoint one would keep);
* tells a trial stopped earlier (by ASHA) as PRUNED; Optuna keeps its intermediate values, and TPE
  ranks pruned trials by how far they got and what they reached;
* tells a trial whose loss went non-finite (``diverged``; the training loop stops it at once) and a trial
  that raised as FAIL: there is no honest objective value for them, and a made-up "worst value" would be
  indistinguishable from a real poor result. TPE ignores FAIL trials.

Each Optuna trial carries user attributes ``ray_trial_id`` and ``tune_tl_status`` (``completed`` |
``pruned`` | ``diverged`` | ``error``, the Parquet ``status``), and ``tune_tl_error`` when the trial
reported why it ended. The study lives in
``<search>/optuna.db`` (SQLite, study name = search name), so it can be opened while or after the search
runs:

    >>> study = optuna.load_study(study_name="demo", storage="sqlite:///results/demo/optuna.db")
    >>> study.trials_dataframe()[["number", "state", "value", "user_attrs_tune_tl_status"]]

or ``optuna-dashboard sqlite:///results/demo/optuna.db``. SQLite needs a local file, so a search whose
output is an object store (``s3://``, ``gs://``) keeps the study in a local copy (``SearchRun.study_file``) that
:class:`SqliteMirror` uploads to ``<search>/optuna.db`` at every Ray snapshot and at the end.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import tempfile
import warnings
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.callback import CallbackList
from ray.tune.search import Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from tune_tl.compat import (
    TPESamplerWithCost,
    generator_target,
    running_trial,
    searcher_completed,
    searcher_study,
    searcher_trials,
    set_generator_target,
)
from tune_tl.search.admission import MAX_REDRAWS, Admission, BudgetClock, Refusal
from tune_tl.search.plan import SearchPlan
from tune_tl.search.textbook import textbook_trials
from tune_tl.store.schema import NOT_STARTED
from tune_tl.store.storage import Location
from tune_tl.store.trial_record import TrialRecord, is_epoch_result

log = logging.getLogger(__name__)


class SampleTarget(SearchGenerator):
    """Ray's ``SearchGenerator`` whose sample count can be raised when a search is restored.

    Ray restores a generator's ``total_samples`` from the experiment snapshot and offers no way to
    change it, so ``tune-tl resume --samples N`` sets ``extend_to`` for the duration of the restored
    ``fit``; ``set_state`` (called by Ray's restore) then raises the target. The searcher and its
    study are Ray's restored ones, so new trials are sampled with everything learned so far.
    """

    extend_to: int | None = None  # class-level: set only by ``extending`` in the driver process
    reconciled = None  # class-level: the resume's ``search.reconcile.Reconciled``, set only by ``extending``

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if SampleTarget.reconciled is not None:  # trials counted as the records agree, not as this (maybe older) state says
            SampleTarget.reconciled.apply_to_generator(self)
        if SampleTarget.extend_to is not None and SampleTarget.extend_to > generator_target(self):
            log.info("extending the search from %d to %d trials", generator_target(self), SampleTarget.extend_to)
            set_generator_target(self, SampleTarget.extend_to)

    def restore_from_dir(self, dirpath: str) -> None:
        """Restore as Ray does, then empty Ray's staging folder of the files this session must not upload again.

        Ray's restore copies every ``.json`` and ``.pkl`` of the search folder (``tuner.pkl``, ``search.json``, the
        earlier snapshots) into its staging folder and uploads the whole staging folder at every snapshot, rewriting
        each of those files in place: a driver killed during an upload left them empty, and the next ``tune-tl
        resume`` failed on an empty ``tuner.pkl``. Once the searcher is restored, Ray reads only the callbacks' state
        from there; the snapshots this session writes have new names.
        """
        super().restore_from_dir(dirpath)
        staging = Path(dirpath)
        if staging.name != "driver_artifacts":  # Ray's documented staging folder; never touch anything else
            return
        for path in staging.iterdir():
            if path.is_file() and not fnmatch(path.name, CallbackList.CKPT_FILE_TMPL.format("*")):
                path.unlink()

    @staticmethod
    @contextmanager
    def extending(samples: int | None, reconciled=None):
        SampleTarget.extend_to, SampleTarget.reconciled = samples, reconciled
        try:
            yield
        finally:
            SampleTarget.extend_to = SampleTarget.reconciled = None


class SqliteMirror(Callback):
    """Driver-side Ray callback: copy a driver-local SQLite file (the Optuna study) to storage at
    every experiment snapshot and at the end, so a search on an object store keeps its study next
    to its results and ``tune-tl resume`` can continue it from another machine. The copy is taken
    with SQLite's backup API, so it is consistent even if a write were under way."""

    def __init__(self, local: Path, remote: Location):
        self.local, self.remote = Path(local), remote

    def get_state(self):
        self.copy()
        return None

    def on_experiment_end(self, trials, **info):
        self.copy()

    def copy(self) -> None:
        if not self.local.is_file():
            return
        with tempfile.TemporaryDirectory(prefix="tune_tl-sqlite-") as tmp:
            copy = Path(tmp) / self.local.name
            src, dst = sqlite3.connect(self.local), sqlite3.connect(copy)
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
            self.remote.upload(copy)


def storage_url(path) -> str:
    """SQLAlchemy URL of an SQLite file at ``path`` (absolute, so it works from any working directory)."""
    return f"sqlite:///{Path(path).resolve()}"


class HonestOptunaSearch(OptunaSearch):
    """``OptunaSearch`` whose Optuna records say what happened to each trial (see the module docstring).

    Args:
        space: Define-by-run function (``fn(trial) -> constants``).
        metric: Result key of the objective, reported every epoch.
        mode: ``"max"`` or ``"min"``.
        max_epochs: A trial that reached this many epochs completed; fewer means it was pruned.
        sampler: Optuna sampler (e.g. seeded TPE).
        storage: SQLAlchemy URL for the study (e.g. :func:`storage_url`); ``None`` keeps it in memory.
        study_name: Name of the study in ``storage``.
        time_attr: Result key counting epochs (the step of intermediate values).
        admission: Which proposals may start (``search.admission``): a refused one is told FAIL (``tune_tl_status``
            ``not_started``, ``tune_tl_reason``), handed to ``on_refused(row_id, config, reason)`` when its
            :class:`~tune_tl.search.admission.Refusal` asks for a row, and drawn again.
        clock: The budget's clock (counts the trials started; restarted by a resume).
    """

    def __init__(
        self,
        space: Callable,
        metric: str,
        mode: str,
        max_epochs: int,
        sampler: optuna.samplers.BaseSampler | None = None,
        storage: str | None = None,
        study_name: str | None = None,
        time_attr: str = "epoch",
        admission: Admission | None = None,
        clock: BudgetClock | None = None,
        on_refused: Callable[[str, dict, str], None] | None = None,
    ):
        rdb = optuna.storages.RDBStorage(storage) if storage else None
        super().__init__(space=space, metric=metric, mode=mode, sampler=sampler, storage=rdb, study_name=study_name)
        self._max_epochs = max_epochs
        self._time_attr = time_attr
        self._records: dict[str, TrialRecord] = {}
        self._admission, self._clock, self._on_refused = admission, clock, on_refused
        self._configs: dict[str, dict] = {}  # Ray trial id -> its config, for the admission's calibration

    def restore(self, checkpoint_path: str):
        """Restore Ray's snapshot, then follow the study, which is never behind it (a resume has settled it with
        Ray's trials first: ``tune_tl.search.reconcile``): a trial the study holds as ended is not told again, and
        one still running keeps its one Optuna trial and the epochs already reported to it."""
        super().restore(checkpoint_path)
        if getattr(self, "_clock", None) is not None:  # the resumed Tuner's budget counts from now, as Ray's does
            self._clock.restart()
        study, completed = searcher_study(self), searcher_completed(self)
        for frozen in study.get_trials(deepcopy=False):
            ray_id = frozen.user_attrs.get("ray_trial_id")
            if ray_id is None:
                continue
            if frozen.state.is_finished():
                completed.add(ray_id)
                self._records.pop(ray_id, None)
            elif frozen.state == TrialState.RUNNING:
                completed.discard(ray_id)
                searcher_trials(self)[ray_id] = running_trial(study, frozen)
                record = self._records.setdefault(ray_id, TrialRecord())
                for step, value in frozen.intermediate_values.items():
                    record.add_epoch(step, value, diverged=False)  # heard before: not reported again

    def suggest(self, trial_id: str):
        clock = getattr(self, "_clock", None)
        left = clock.seconds_left() if clock is not None else None
        if left is not None and left <= 0:  # Ray's clock is about to end the Tuner: nothing to draw, refuse or record
            return Searcher.FINISHED
        admission = getattr(self, "_admission", None)  # None in a searcher pickled before admission existed
        out_of_time = admission.fit.nothing_fits() if admission is not None and admission.fit is not None else None
        if out_of_time is not None:  # every draw would be refused: draw none, record none
            log.info("searcher: %s; no more trials are started", out_of_time)
            return Searcher.FINISHED
        for _ in range(MAX_REDRAWS):
            config = super().suggest(trial_id)
            refusal = admission.refusal(config) if admission is not None and config else None
            if refusal is None:
                break
            self._refuse(trial_id, config, refusal)
        else:
            log.info("searcher: %d proposals in a row were refused (the last: %s); no more trials are started", MAX_REDRAWS,
                     refusal.reason)
            return Searcher.FINISHED
        if trial_id in searcher_trials(self):
            searcher_trials(self)[trial_id].set_user_attr("ray_trial_id", trial_id)
            if admission is not None:
                self._configs[trial_id] = dict(config)
            if getattr(self, "_clock", None) is not None:
                self._clock.trials_started += 1
        return config

    def _refuse(self, trial_id: str, config: dict, refusal: Refusal) -> None:
        """End the Optuna trial Ray's searcher asked for ``trial_id`` as never started, so the next ask draws anew."""
        ot_trial = searcher_trials(self).pop(trial_id)
        ot_trial.set_user_attr("tune_tl_status", NOT_STARTED)
        ot_trial.set_user_attr("tune_tl_reason", refusal.reason)
        searcher_study(self).tell(ot_trial, state=TrialState.FAIL)
        log.info("searcher: trial %d not started, %s", ot_trial.number, refusal.reason)
        sampler = searcher_study(self).sampler
        if refusal.row and isinstance(sampler, TPESamplerWithCost):
            # Refused for the time left: random start-up draws would meet the same refusal again and again (16 in a row
            # idled the cores for the last 78 s of a photo search); TPE's cost-aware choice never draws such a config.
            sampler.end_startup()
        if refusal.row and getattr(self, "_on_refused", None) is not None:
            self._on_refused(f"not_started-{ot_trial.number}", config, refusal.reason)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in searcher_completed(self) or trial_id not in searcher_trials(self):
            return
        record = self._records.setdefault(trial_id, TrialRecord())
        is_epoch = is_epoch_result(result, self._time_attr)
        if not record.add_result(result) or not is_epoch:
            return  # already seen (e.g. the final result repeated at completion), or the trainable's verdict
        if getattr(self, "_admission", None) is not None and trial_id in self._configs:
            self._admission.observe(self._configs[trial_id], result)
        epoch, value = record.history[-1][0], result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            searcher_trials(self)[trial_id].report(float(value), step=epoch)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in searcher_completed(self) or trial_id not in searcher_trials(self):
            return
        if result:
            self.on_trial_result(trial_id, result)
        record = self._records.pop(trial_id, TrialRecord())
        getattr(self, "_configs", {}).pop(trial_id, None)
        status, error_text = record.verdict(self._max_epochs, raised="raised" if error else None)
        ot_trial = searcher_trials(self)[trial_id]
        ot_trial.set_user_attr("tune_tl_status", status)
        if error_text and not error:  # the trial's own message (a raised one is only in Ray's error file)
            ot_trial.set_user_attr("tune_tl_error", error_text)  # what a resume rebuilding the trial's row writes
        state, value = optuna_outcome(status, record)
        try:
            searcher_study(self).tell(ot_trial, value, state=state)
        except Exception as exc:  # never let bookkeeping kill the search
            log.warning("could not record trial %s in Optuna: %s", trial_id, exc)
        searcher_completed(self).add(trial_id)


def optuna_outcome(status: str, record: TrialRecord) -> tuple[TrialState, float | None]:
    """How a trial's ``status`` is told to Optuna: completed → COMPLETE with its best epoch's value, pruned →
    PRUNED (its intermediate values stay), diverged / oom / error → FAIL (no honest value exists)."""
    if status == "completed" and record.best is not None:
        return TrialState.COMPLETE, record.best[0]
    if status == "pruned":
        return TrialState.PRUNED, None
    return TrialState.FAIL, None


def startup_trials(samples: int) -> int:
    """TPE's random start-up trials for a search of ``samples`` trials: a quarter, 3 to 10.

    Optuna's fixed 10 means a 10–16 trial search is (almost) random search; a quarter of the budget
    leaves TPE most of the trials, and the textbook recipes enqueued first count towards it.
    """
    return min(10, max(3, samples // 4))


def make_sampler(name: str, spec, cost: Callable[[Mapping], float] | None = None,
                 cooling: Callable[[], float] | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name`` (``options.SAMPLERS``, or the benchmarks' ``BENCHMARK_SAMPLERS``), seeded with ``spec.seed``.

    ``tpe`` is multivariate TPE with the group-decomposed search space (the space is conditional:
    ``freeze_blocks`` exists only under ``prefix``, ``head_hidden`` only with an MLP head), the
    constant liar for parallel trials, and :func:`startup_trials` random trials first; given ``cost``
    (a search passes :class:`tune_tl.search.cost_sampler.CandidateCost`), it picks each next config by
    expected gain per predicted cost^α (:class:`tune_tl.compat.TPESamplerWithCost`), α = ``cooling()`` (a search
    passes :class:`tune_tl.search.cost_sampler.CostCooling`; ``None``: α = 1). ``tpe-gain``
    is the same TPE without the cost, ``tpe-classic`` Optuna's stock TPE, ``random`` random search.
    """
    if name == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if name == "tpe-classic":
        return optuna.samplers.TPESampler(seed=spec.seed)
    if name not in ("tpe", "tpe-gain"):
        raise ValueError(f"unknown sampler {name!r}")
    settings = dict(seed=spec.seed, n_startup_trials=startup_trials(spec.budget.samples), multivariate=True, group=True,
                    constant_liar=True)
    with warnings.catch_warnings():  # ``group`` is marked experimental since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe" and cost is not None:
            return TPESamplerWithCost(cost, cooling, **settings)
        return optuna.samplers.TPESampler(**settings)


def enqueue_textbook(searcher: OptunaSearch, plan: SearchPlan, backbone: str | None = None, after_probes: bool = False,
                     whole_model_fits: bool = True) -> list[str]:
    """Enqueue the textbook recipes that fit ``plan``'s space as the study's first trials; their names.

    With a choice of backbones they go to ``backbone`` (the best probe's), else to the plan's first one (the
    best ranked). ``after_probes``: the search's probes ran; ``whole_model_fits``: a whole-model epoch fits the
    time budget's share (``search.textbook``).
    """
    if plan.spec.space_fn is not None:
        return []
    first = plan.backbones[backbone] if backbone else plan.first
    resolution = first.fixed.get("resolution")
    kept = plan.cost_model.probed_boundaries.get(first.name, {}).get(resolution, ()) if plan.cost_model is not None else ()
    recipes = textbook_trials(first.params, first.num_blocks, after_probes, whole_model_fits, kept)
    if plan.spec.backbone.is_choice:
        recipes = [(name, {"backbone": first.name, **params}) for name, params in recipes]
    for _, params in recipes:
        searcher_study(searcher).enqueue_trial(params, skip_if_exists=False)
    if recipes:
        log.info("textbook start: the first trials are %s", ", ".join(n for n, _ in recipes))
    return [n for n, _ in recipes]
