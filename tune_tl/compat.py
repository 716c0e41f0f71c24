"""Every use of Ray's and Optuna's private internals, in one place, each checked against the installed version.

Ray and Optuna can change a private attribute in any release, and ``pyproject.toml`` allows only the
minor versions the suite ran on (Ray 2.60, Optuna 5.1). Code elsewhere in tune_tl reaches them through
the functions here; each raises :class:`InternalsChanged`, naming the installed version and the internal,
instead of failing somewhere inside a search or silently doing something else. ``check_internals``
checks every internal tune_tl uses, and ``tests/test_compat.py`` calls it and
every accessor on real Ray and Optuna objects. The cost-aware TPE (:class:`TPESamplerWithCost`) overrides two
private ``TPESampler`` methods (``_sample`` and ``_compute_acquisition_func``); :func:`check_tpe_internals` checks them.

    >>> from ray.tune.schedulers import ASHAScheduler
    >>> asha_rungs(ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=4, grace_period=1, reduction_factor=2))
    [1, 2, 4]
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna
import ray
from optuna.samplers import TPESampler
from ray.tune.execution import experiment_state as ray_experiment_state
from ray.tune.schedulers import ASHAScheduler
from ray.tune.utils import serialization as ray_serialization

log = logging.getLogger(__name__)

#: The versions these accessors were written and tested for (``pyproject.toml`` allows these minor series).
TESTED = {"ray": "2.60", "optuna": "5.1"}


class InternalsChanged(RuntimeError):
    """A private Ray or Optuna internal that tune_tl relies on is not what it was in the tested version."""


def _changed(library: str, what: str) -> InternalsChanged:
    installed = {"ray": ray.__version__, "optuna": optuna.__version__}[library]
    return InternalsChanged(f"{library} {installed}: {what}; tune_tl/compat.py was written for {library} {TESTED[library]} "
                            f"(pyproject.toml pins it): adapt compat.py to this version or install {library}=={TESTED[library]}.*")


def _attr(library: str, obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise _changed(library, f"{type(obj).__name__} has no attribute {name}") from None


# ------------------------------------------------------------------------------------------------ Ray


def max_cluster_resources() -> dict[str, float] | None:
    """The most of each resource the cluster's autoscaler may provide (``None``: the cluster does not autoscale).

    Ray's private ``ray._private.state.state.get_max_resources_from_cluster_config``, which Ray Train v2
    uses for the same check.
    """
    try:
        from ray._private.state import state
    except ImportError:
        raise _changed("ray", "ray._private.state.state is gone") from None
    return _attr("ray", state, "get_max_resources_from_cluster_config")()


@dataclass(frozen=True)
class AshaSettings:
    """What ``ASHAScheduler.__init__`` stored, as the scheduler itself compares results."""

    time_attr: str
    metric: str
    metric_op: float  # +1 to maximise, -1 to minimise: ASHA compares ``metric_op * value``
    max_t: float
    stop_last_trials: bool


def asha_settings(scheduler: ASHAScheduler) -> AshaSettings:
    """The time attribute, metric, sign, ``max_t`` and ``stop_last_trials`` of an ASHA scheduler."""
    return AshaSettings(*(_attr("ray", scheduler, name) for name in
                          ("_time_attr", "_metric", "_metric_op", "_max_t", "_stop_last_trials")))


def asha_bracket(scheduler: ASHAScheduler) -> Any:
    """The one bracket of an ASHA scheduler (tune_tl's schedulers use ``brackets=1``)."""
    brackets = _attr("ray", scheduler, "_brackets")
    if len(brackets) != 1:
        raise ValueError(f"expected ASHA with a single bracket (brackets=1), got {len(brackets)}")
    return brackets[0]


def asha_rungs(scheduler: ASHAScheduler) -> list[float]:
    """The milestones of the scheduler's rungs, lowest first (Ray's count: ``max_t`` is the last)."""
    return sorted(milestone for milestone, _ in _attr("ray", asha_bracket(scheduler), "_rungs"))


def record_in_bracket(bracket: Any, trial_id: str, time: float, value: float) -> str:
    """Record a result in ``bracket``'s rungs as ``ASHAScheduler.on_trial_result`` does; Ray's decision
    (``CONTINUE`` or ``STOP``). ``value`` is already signed (``metric_op * metric``)."""
    return _attr("ray", bracket, "on_result")(SimpleNamespace(trial_id=trial_id), time, value)


def set_asha_rungs(scheduler: ASHAScheduler, milestones: list[float], max_t: float) -> None:
    """Give the scheduler's one bracket new, empty rungs at ``milestones`` (lowest first) and a new ``max_t``.

    The bracket is changed in place: trials already added keep pointing at it (cost-aware ASHA sets its rungs
    once its unit is known).
    """
    bracket = asha_bracket(scheduler)
    _attr("ray", bracket, "_rungs")  # the shape check_internals verifies
    bracket._rungs = [(m, {}) for m in reversed(milestones)]
    _attr("ray", scheduler, "_max_t")
    scheduler._max_t = max_t


def forget_trial(scheduler: ASHAScheduler, trial_id: str) -> None:
    """Drop a trial from the scheduler's bookkeeping, as Ray does when a trial is removed."""
    _attr("ray", scheduler, "_trial_info").pop(trial_id, None)


def count_stopped(scheduler: ASHAScheduler) -> None:
    """Count one more trial stopped by the scheduler, in the counter Ray's ``debug_string`` reports."""
    scheduler._num_stopped = _attr("ray", scheduler, "_num_stopped") + 1


# --------------------------------------------------------------------------------------------- Optuna


def set_trial_user_attr(study: optuna.Study, trial: optuna.trial.FrozenTrial, key: str, value: Any) -> None:
    """Set a user attribute of a trial that is not the caller's ``optuna.Trial`` (e.g. one a killed driver left RUNNING)."""
    storage = _attr("optuna", study, "_storage")
    storage.set_trial_user_attr(_attr("optuna", trial, "_trial_id"), key, value)


def set_intermediate_value(study: optuna.Study, trial: optuna.trial.FrozenTrial, step: int, value: float) -> None:
    """Record an epoch's value on a trial that is not the caller's ``optuna.Trial`` (a resume rebuilding what a killed
    driver had not yet told the study)."""
    storage = _attr("optuna", study, "_storage")
    storage.set_trial_intermediate_value(_attr("optuna", trial, "_trial_id"), step, value)


def running_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> optuna.Trial:
    """An ``optuna.Trial`` handle on a RUNNING trial of ``study`` (one a restored searcher goes on reporting to)."""
    return optuna.trial.Trial(study, _attr("optuna", trial, "_trial_id"))


def distribution_contains(dist: optuna.distributions.BaseDistribution, value: Any) -> bool:
    """Whether ``dist`` could have sampled ``value`` (in range, on its step; a categorical's choices).

    Raises:
        ValueError: ``value`` is not one of a categorical distribution's choices.
    """
    return bool(_attr("optuna", dist, "_contains")(dist.to_internal_repr(value)))


# ------------------------------------------------------------------------- Optuna: cost-aware TPE

#: The private ``TPESampler`` methods :class:`TPESamplerWithCost` overrides, with the parameters it expects.
TPE_INTERNALS = {"_sample": ("self", "study", "trial", "search_space"),
                 "_compute_acquisition_func": ("self", "samples", "mpe_below", "mpe_above")}


def check_tpe_internals() -> None:
    """Raise, naming the installed Optuna version, if a private ``TPESampler`` method we override has changed."""
    for name, expected in TPE_INTERNALS.items():
        method = getattr(TPESampler, name, None)
        found = tuple(inspect.signature(method).parameters) if callable(method) else None
        if found != expected:
            raise _changed("optuna", f"TPESampler.{name} is {found or 'gone'}, not {expected}, which TPESamplerWithCost "
                                     "overrides (--sampler random does without it)")


class TPESamplerWithCost(TPESampler):
    """TPE that picks, among the candidates drawn from l(x), the best expected gain *per unit cost*.

    Optuna's TPE takes the argmax of log l(x) − log g(x) over ``n_ei_candidates`` draws; this one takes the
    argmax of log l(x) − log g(x) − log cost(x), i.e. the density ratio divided by the cost (Quick-Tune's
    cost-aware acquisition, Arango et al., ICLR 2024). Where the cost does not depend on a group's
    parameters (a learning rate), it is the same for every candidate and the choice is TPE's.

    With ``cooling`` (``cooling() -> α`` in [0, 1]) the cost's exponent is α: cost-cooling, α falling from 1 to 0
    as the budget is spent, so cheapness decides early and expected gain alone decides late.

    Args:
        cost: ``cost(params) -> float > 0`` for a dict of parameter values. A candidate of one parameter group
            is scored with the values already chosen for this trial (earlier groups of the same relative sample,
            or parameters suggested before) beside it; parameters it does not give are the caller's to default.
        **kwargs: ``TPESampler``'s arguments.
    """

    def __init__(self, cost: Callable[[Mapping[str, Any]], float], cooling: Callable[[], float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self._cost = cost
        self._cooling = cooling
        self._scoring: tuple[dict, dict] = ({}, {})  # (the group's distributions, the trial's values so far)
        self._chosen: tuple[int, dict] = (-1, {})  # (trial number, values this sampler chose for it)

    def end_startup(self) -> None:
        """Choose by the acquisition from now on, however few trials completed: the random start-up draws ignore
        ``cost``, so once a cost of infinity ("cannot start now") is what turns draws away, they are refused in a row."""
        self._n_startup_trials = 0

    def _sample(self, study, trial, search_space):
        number, chosen = self._chosen
        known = {**(chosen if number == trial.number else {}), **trial.params}
        self._scoring = (search_space, known)
        sampled = super()._sample(study, trial, search_space)
        self._chosen = (trial.number, {**known, **sampled})
        return sampled

    def _compute_acquisition_func(self, samples, mpe_below, mpe_above):
        gain = super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        space, known = self._scoring
        try:
            costs = np.array([self._cost({**known, **_external(space, samples, i)}) for i in range(len(gain))], dtype=float)
        except Exception as exc:  # a search must not die in its sampler: this one draw goes by expected gain alone
            log.warning("cost-aware TPE: could not price the candidates (%s: %s); choosing by expected gain", type(exc).__name__, exc)
            return gain
        return cooled_acquisition(gain, costs, 1.0 if self._cooling is None else self._cooling())


def cooled_acquisition(gain: np.ndarray, costs: np.ndarray, alpha: float) -> np.ndarray:
    """log l(x) − log g(x) − α·log cost(x): the density ratio divided by cost^α (α = 0: TPE's own choice).

    An infinite cost means "never": such a candidate scores −∞ whatever α (it wins only if every candidate is one).
    """
    costs = np.asarray(costs, dtype=float)
    never = np.isinf(costs)
    scored = gain - alpha * np.log(np.maximum(np.where(never, 1.0, costs), np.finfo(float).tiny))
    return np.where(never, -np.inf, scored)


def _external(space: Mapping[str, optuna.distributions.BaseDistribution], samples: Mapping[str, np.ndarray], i: int) -> dict[str, Any]:
    """Candidate ``i`` of TPE's internal samples as parameter values (a choice's value, not its index)."""
    values = {name: dist.to_external_repr(samples[name][i]) for name, dist in space.items()}
    return {name: v.item() if isinstance(v, np.generic) else v for name, v in values.items()}


# ------------------------------------------------------------------- Ray: the Optuna searcher and its generator


def searcher_study(searcher: Any) -> optuna.Study:
    """The study of Ray's ``OptunaSearch``."""
    return _attr("ray", searcher, "_ot_study")


def searcher_trials(searcher: Any) -> dict[str, optuna.Trial]:
    """Ray trial id -> the ``optuna.Trial`` Ray's ``OptunaSearch`` asked for it (the searcher's own dict: edits stick)."""
    return _attr("ray", searcher, "_ot_trials")


def searcher_completed(searcher: Any) -> set[str]:
    """The Ray trial ids Ray's ``OptunaSearch`` has told the study about (the searcher's own set: edits stick)."""
    return _attr("ray", searcher, "_completed_trials")


def generator_target(generator: Any) -> int:
    """How many trials a Ray ``SearchGenerator`` will create in all."""
    return _attr("ray", generator, "_total_samples")


def set_generator_target(generator: Any, samples: int) -> None:
    """Let a restored ``SearchGenerator`` create trials up to ``samples`` in all (``tune-tl resume --samples``)."""
    _attr("ray", generator, "_total_samples")
    generator._total_samples, generator._finished = samples, False


def set_generator_count(generator: Any, created: int, live: set[str]) -> None:
    """Make a restored ``SearchGenerator`` (and a ``ConcurrencyLimiter`` under it) agree that ``created`` trials exist
    and ``live`` still run: its saved counters may come from an older snapshot than its trials."""
    _attr("ray", generator, "_counter")
    generator._counter = created
    limiter = generator.searcher
    if hasattr(limiter, "live_trials"):
        limiter.live_trials = set(live)
        limiter.num_unfinished_live_trials = len(live)


def experiment_snapshot(fs: Any, folder: str) -> dict | None:
    """Ray's newest experiment snapshot in ``folder`` (``trial_data``, ``runner_data``), loaded as ``TuneController.resume``
    loads it, or ``None`` when there is none."""
    newest = _attr("ray", ray_experiment_state, "_find_newest_experiment_checkpoint")(folder, fs=fs)
    if newest is None:
        return None
    with fs.open_input_stream(newest) as f:
        return _attr("ray", ray_serialization, "_loads_with_cloudpickle")(f.readall())


# ------------------------------------------------------------------------------------- the whole list


def check_internals() -> None:
    """Raise :class:`InternalsChanged` if any private internal tune_tl uses is missing or has another shape.

    Covers every accessor above, on real objects of the installed versions.
    """
    from ray.tune.search import SearchGenerator
    from ray.tune.search.optuna import OptunaSearch

    _attr("ray", ray_experiment_state, "_find_newest_experiment_checkpoint")
    _attr("ray", ray_serialization, "_loads_with_cloudpickle")
    asha = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    if asha_settings(asha) != AshaSettings("epoch", "val_acc", 1.0, 4, True):
        raise _changed("ray", f"ASHAScheduler stores its settings differently: {asha_settings(asha)}")
    if asha_rungs(asha) != [1, 2, 4] or not all(isinstance(r, dict) for _, r in asha_bracket(asha)._rungs):
        raise _changed("ray", "ASHA's bracket._rungs is not a list of (milestone, {trial_id: value})")
    parameters = list(inspect.signature(_attr("ray", asha_bracket(asha), "on_result")).parameters)
    if parameters != ["trial", "cur_iter", "cur_rew"]:
        raise _changed("ray", f"ASHA's _Bracket.on_result takes {parameters}, not (trial, cur_iter, cur_rew)")
    if not isinstance(_attr("ray", asha, "_trial_info"), dict) or not isinstance(_attr("ray", asha, "_num_stopped"), int):
        raise _changed("ray", "ASHAScheduler._trial_info is not a dict or _num_stopped is not an int")

    generator = SearchGenerator(OptunaSearch(space=lambda trial: None, metric="val_acc", mode="max"))
    generator.set_state({"counter": 0, "total_samples": 6, "finished": True, "experiment": None})
    if generator_target(generator) != 6:
        raise _changed("ray", "SearchGenerator.set_state no longer sets _total_samples")
    set_generator_target(generator, 8)
    set_generator_count(generator, 3, {"a"})
    if (generator.total_samples, generator.is_finished(), _attr("ray", generator, "_counter")) != (8, False, 3):
        raise _changed("ray", "SearchGenerator's _total_samples, _finished and _counter no longer drive total_samples and is_finished")

    searcher = OptunaSearch(space=_one_float, metric="val_acc", mode="max")
    searcher.suggest("t")
    if not isinstance(searcher_trials(searcher).get("t"), optuna.Trial):
        raise _changed("ray", "OptunaSearch._ot_trials does not map a Ray trial id to its optuna.Trial")
    if not isinstance(searcher_study(searcher), optuna.Study) or not isinstance(searcher_completed(searcher), set):
        raise _changed("ray", "OptunaSearch._ot_study is not an optuna.Study or _completed_trials is not a set")
    study = searcher_study(searcher)
    frozen = study.trials[0]
    set_trial_user_attr(study, frozen, "checked", True)
    set_intermediate_value(study, frozen, 1, 0.5)
    running_trial(study, frozen).report(0.75, step=2)
    if study.trials[0].user_attrs.get("checked") is not True or study.trials[0].intermediate_values != {1: 0.5, 2: 0.75}:
        raise _changed("optuna", "Study._storage.set_trial_user_attr / set_trial_intermediate_value (FrozenTrial._trial_id) "
                                 "or Trial(study, trial_id) no longer write the trial")
    check_tpe_internals()
    dist = optuna.distributions.FloatDistribution(0.0, 1.0, step=0.5)
    if (distribution_contains(dist, 0.5), distribution_contains(dist, 0.25), distribution_contains(dist, 2.0)) != (True, False, False):
        raise _changed("optuna", "BaseDistribution._contains no longer checks range and step")


def _one_float(trial: optuna.Trial) -> None:
    trial.suggest_float("x", 0.0, 1.0)
