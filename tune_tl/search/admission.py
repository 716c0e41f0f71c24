"""Which configs the searcher may start: none a stage-0 probe already solves, none whose first epoch cannot finish.

:class:`tune_tl.search.sampler.HonestOptunaSearch` asks an :class:`Admission` about every config Optuna proposes;
a refused one is told to the study as FAIL (``tune_tl_status`` = ``not_started``, ``tune_tl_reason`` = why: TPE
ignores it), gets a ``trials`` row with status ``not_started`` and the reason in ``error`` when it was refused for
time (:class:`Refusal`), and Optuna is asked again (up to :data:`MAX_REDRAWS` times; then the searcher starts no
more trials and the running ones keep the cores).

* **Dominated** (:class:`ProbeDominance`): a linear head on a fully frozen backbone without input augmentation, at
  a backbone and resolution a probe ran at. The probe fitted that convex problem exactly (scikit-learn, its ``C``
  cross-validated); an AdamW run of it can only tie or lose, and the cost-aware sampler found it cheap.
* **Cannot finish its first epoch** (:class:`FirstEpochFit`): its predicted cost (``cost_model``) in seconds,
  times :data:`FIT_MARGIN` (:data:`MEASURED_FIT_MARGIN` once its kind of epoch was measured), is more than the time
  budget has left. Seconds per FLOP come from the trials' own
  measured epochs (they ran with the cores they share) once there are any; before the first, every config is
  admitted (the probes' seconds
  price small images badly: :func:`search_admission`). The probes do judge, by :func:`whole_model_fits`, whether
  the textbook start includes a whole-model fine-tune.

    >>> admission = Admission(ProbeDominance({("lite0", 224)}, {"lite0": 9}))    # doctest: +SKIP
    >>> admission.refusal({"backbone": "lite0", "resolution": 224, "freeze_policy": "head_only", "head": "linear"}).reason  # doctest: +SKIP
    'dominated by probe-lite0-224: ...'
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from tune_tl.config.params import TrialConfig
from tune_tl.errors import TuneTLError
from tune_tl.store.results import trial_row, write_table_atomic
from tune_tl.store.schema import NOT_STARTED, TRIAL_SCHEMA
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location
from tune_tl.store.trial_record import TrialRecord
from tune_tl.training.cost_model import CostModel, seconds_per_flop
from tune_tl.training.recipe import freeze_policy, inputs_vary

#: A first epoch starts only if the seconds left are this many times its prediction, while its kind of epoch (from
#: pixels or from a cache) has no measured epoch of this search: predictions of epochs that run from pixels hold within
#: 2x (tests/test_reproducible_e2e.py), and an unmeasured kind is priced from the other (:data:`PIXELS_OVER_CACHED`).
#: Without the margin, two augmented trials started in a photo search's last 100 s and neither finished an epoch; with
#: it the sampler draws among configs that can (``Admission.excludes``).
FIT_MARGIN = 2.0
#: The margin once the kind has measured epochs. In twenty 600 s photo searches (625 trial epochs), an epoch took at
#: most 1.25x what the median of the same kind's earlier epochs predicted in 96 % of cases and at most 1.5x in 99 %
#: (one took 2.5x). At 2x, the cores idled for the last 80-130 s of the Tuner's time on chest X-rays and scenes with a
#: 50-s cached epoch that would have fitted (stop 45's runs).
MEASURED_FIT_MARGIN = 1.5
#: Seconds per counted FLOP of an epoch that decodes images over one that reads a cache: 2.3-2.8 (median of each kind)
#: in 600 s searches on blood cells, chest X-rays, scenes and textures at 224-260 px on two cores. It prices one kind
#: until an epoch of it is measured.
PIXELS_OVER_CACHED = 2.5
#: Proposals refused in a row before the searcher stops starting trials (each refusal is one Optuna ask: milliseconds).
MAX_REDRAWS = 16


@dataclass
class BudgetClock:
    """How much of the Tuner's budget is spent: the seconds of ``budget.time`` it was given, else its trial count.

    Shared by the cost-cooling sampler (:class:`tune_tl.search.cost_sampler.CostCooling`) and :class:`FirstEpochFit`;
    both are pickled with the searcher, as one object. A resumed search restarts it (:meth:`restart`), as Ray's own
    budget clock restarts on ``tune-tl resume``.
    """

    seconds: float | None
    samples: int
    started: float = field(default_factory=time.time)
    trials_started: int = 0

    def seconds_left(self, now: float | None = None) -> float | None:
        if self.seconds is None:
            return None
        return self.started + self.seconds - (time.time() if now is None else now)

    def spent(self, now: float | None = None) -> float:
        """The share of the budget spent, 0 to 1: elapsed / ``seconds``, or trials started / ``samples`` without a time budget."""
        if self.seconds is not None:
            share = ((time.time() if now is None else now) - self.started) / self.seconds if self.seconds > 0 else 1.0
        else:
            share = self.trials_started / self.samples if self.samples > 0 else 1.0
        return min(1.0, max(0.0, share))

    def restart(self) -> None:
        self.started = time.time()


@dataclass(frozen=True)
class ProbeDominance:
    """Refuses configs a stage-0 probe solved exactly (see the module docstring)."""

    #: ``(backbone, resolution)`` of every probe that ran.
    probed: frozenset[tuple[str, int]]
    #: backbone -> its block count (``freeze_blocks`` equal to it freezes everything).
    num_blocks: Mapping[str, int]

    def refusal(self, cfg: TrialConfig) -> str | None:
        backbone = cfg.backbone or next(iter(self.num_blocks), None)
        if (backbone, cfg.resolution) not in self.probed or cfg.head != "linear" or inputs_vary(cfg):
            return None
        blocks = self.num_blocks.get(backbone)
        if blocks is None or any(freeze_policy(cfg).trainable_mask(blocks)):
            return None
        probe = f"probe-{backbone.replace('/', '_')}-{cfg.resolution}"
        return f"dominated by {probe}: a linear head on the frozen backbone without augmentation, which the probe fitted exactly"


@dataclass
class FirstEpochFit:
    """Refuses a config whose first epoch is predicted to end after the budget (see the module docstring).

    Epochs that decode images (``CostModel.reads_pixels``) and epochs that read a cache are calibrated apart: a rate
    from cached epochs admitted from-pixels trials in a photo search's last 100 s that ran out the budget without
    finishing an epoch. A kind not yet measured is priced from the other by :data:`PIXELS_OVER_CACHED`.
    """

    model: CostModel
    clock: BudgetClock
    #: Seconds per FLOP from the probes, already scaled to a trial's share of the cores (``None``: no probes).
    prior: float | None = None
    #: ``(predicted FLOPs, measured seconds)`` of every trial epoch the searcher has heard, by whether it read pixels.
    measured: dict[bool, list[tuple[float, float]]] = field(default_factory=lambda: {True: [], False: []})

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("measured"), list):  # pickled by a searcher that kept one list: its kind is unknown
            state = {**state, "measured": {True: [], False: list(state["measured"])}}
        self.__dict__.update(state)

    def observe(self, cfg: TrialConfig, epoch: int, seconds: float) -> None:
        """Calibrate on a trial's measured epoch (the searcher calls it with each result)."""
        with contextlib.suppress(ValueError, KeyError):  # a config the cost model cannot price calibrates nothing
            kind = self.model.reads_pixels(cfg, epoch)
            self.measured[kind].append((self.model.epoch_cost(cfg, epoch), float(seconds)))

    def seconds_per_flop(self, pixels: bool) -> float | None:
        """Measured seconds per FLOP of epochs from pixels (``pixels``) or from a cache, else the other kind's scaled by
        :data:`PIXELS_OVER_CACHED`, else :attr:`prior`."""
        for kind, scale in ((pixels, 1.0), (not pixels, PIXELS_OVER_CACHED if pixels else 1 / PIXELS_OVER_CACHED)):
            rate = seconds_per_flop([p for p, _ in self.measured[kind]], [s for _, s in self.measured[kind]])
            if rate is not None:
                return rate * scale
        return self.prior

    def margin(self, pixels: bool) -> float:
        """How many times its predicted seconds a first epoch of this kind needs left: :data:`MEASURED_FIT_MARGIN` once
        an epoch of the kind was measured, else :data:`FIT_MARGIN`."""
        return MEASURED_FIT_MARGIN if self.measured[pixels] else FIT_MARGIN

    def nothing_fits(self) -> str | None:
        """Why no config can start now: the seconds left are under :data:`MEASURED_FIT_MARGIN` times the shortest epoch
        any trial of the search has taken, so every draw would be refused (``None`` while something may fit). At the end
        of a 600 s photo search the searcher drew 16 proposals with 0-1 s left, each a ``not_started`` row, before it stopped."""
        left = self.clock.seconds_left()
        shortest = min((s for kind in self.measured.values() for _, s in kind), default=None)
        if left is None or shortest is None or left >= MEASURED_FIT_MARGIN * shortest:
            return None
        return (f"the time budget has {max(left, 0.0):.0f} s left, less than {MEASURED_FIT_MARGIN:g}x the shortest epoch a "
                f"trial has taken ({shortest:.0f} s)")

    def refusal(self, cfg: TrialConfig) -> str | None:
        left = self.clock.seconds_left()
        if left is None:
            return None
        try:
            pixels = self.model.reads_pixels(cfg, 1)
            rate = self.seconds_per_flop(pixels)
            predicted = None if rate is None else self.model.epoch_cost(cfg, 1) * rate
        except (ValueError, KeyError):
            return None  # a config the cost model cannot price (e.g. a Python space's size): not refused on a guess
        margin = self.margin(pixels)
        if predicted is None or predicted * margin <= left:
            return None
        return (f"its first epoch is predicted to take {predicted:.0f} s (it starts only with {margin:g}x that left) and the time "
                f"budget has {max(left, 0.0):.0f} s left")


def probe_rate(probes: Sequence[Mapping], model: CostModel, driver_threads: int, trial_cpus: float) -> float | None:
    """Seconds per FLOP a trial would run at, from the probes' records (``search.json``'s ``probes``): each probe's
    measured seconds in float32 (its ``float32_factor``: a probe's pass may run in bfloat16, trials do not) over the
    predicted cost of its work (one forward of every image, the cache-filling epoch of a head-only config), times
    ``driver_threads`` / ``trial_cpus`` (the probes ran with the driver's threads)."""
    predicted, measured = [], []
    for probe in probes:
        cfg = TrialConfig.from_dict({"backbone": probe["backbone"], "resolution": probe["resolution"], "freeze_policy": "head_only"})
        try:
            predicted.append(model.epoch_cost(cfg, 1))
        except (ValueError, KeyError):
            continue
        measured.append(float(probe["seconds"]) * float(probe.get("float32_factor", 1.0)))
    rate = seconds_per_flop(predicted, measured)
    return None if rate is None else rate * max(1.0, driver_threads / max(trial_cpus, 1e-9))


#: The share of the Tuner's time budget one whole-model epoch may take for the textbook start to include it.
WHOLE_MODEL_SHARE = 1 / 3


def trial_rate(probes: Sequence[Mapping], model: CostModel, trial_cpus: float, gpus: float = 0) -> float | None:
    """:func:`probe_rate` for a trial of ``trial_cpus`` CPUs (with a GPU: the device the probes ran on)."""
    return probe_rate(probes, model, 1 if gpus else torch.get_num_threads(), 1 if gpus else trial_cpus)


def whole_model_fits(model: CostModel, probes: Sequence[Mapping], seconds: float | None, backbone: str, trial_cpus: float,
                     gpus: float = 0) -> bool:
    """Whether one whole-model fine-tune epoch of ``backbone`` is predicted to take at most :data:`WHOLE_MODEL_SHARE` of
    ``seconds`` (the Tuner's budget), at the probes' measured seconds per FLOP (:func:`trial_rate`); true without a
    budget or a probe to judge by. The textbook start replaces it otherwise (``search.textbook.SHORT_BUDGET``)."""
    rate = trial_rate(probes, model, trial_cpus, gpus)
    if seconds is None or rate is None:
        return True
    try:
        return model.fine_tune_epoch(backbone) * rate <= WHOLE_MODEL_SHARE * seconds
    except (ValueError, KeyError):
        return True


@dataclass(frozen=True)
class Refusal:
    """Why a proposal is not started, and whether it gets a ``trials`` row (``status`` ``not_started``)."""

    reason: str
    #: A config the search wanted but had no time for gets a row; a dominated one does not: the sampler never
    #: chooses it on purpose (it prices it at infinity), so only a random start-up draw meets this rule.
    row: bool


@dataclass
class Admission:
    """The searcher's rules, in order; :meth:`refusal` is the first one's :class:`Refusal`, or ``None`` to start the config."""

    dominance: ProbeDominance | None = None
    fit: FirstEpochFit | None = None

    def refusal(self, config: Mapping) -> Refusal | None:
        try:
            cfg = TrialConfig.from_dict(dict(config))
        except TuneTLError:
            return None  # a bad config is the trial's to report (status error), not the searcher's to hide
        return self._first_refusal(cfg)

    def excludes(self, cfg: TrialConfig) -> str | None:
        """Why the sampler must never pick ``cfg`` now (dominated, or its first epoch cannot finish in the time
        left), else ``None``: ``CandidateCost.excluded``, so TPE chooses among candidates that can start instead
        of proposing one this admission refuses (16 refusals in a row end the search's trials)."""
        refused = self._first_refusal(cfg)
        return None if refused is None else refused.reason

    def _first_refusal(self, cfg: TrialConfig) -> Refusal | None:
        for rule, row in ((self.dominance, False), (self.fit, True)):
            reason = rule.refusal(cfg) if rule is not None else None
            if reason is not None:
                return Refusal(reason, row)
        return None

    def observe(self, config: Mapping, result: Mapping) -> None:
        if self.fit is None or result.get("epoch") is None or not result.get("epoch_seconds"):
            return
        try:
            cfg = TrialConfig.from_dict(dict(config))
        except TuneTLError:
            return
        self.fit.observe(cfg, int(result["epoch"]), float(result["epoch_seconds"]))


@dataclass(frozen=True)
class NotStartedRows:
    """``on_refused`` of a search's searcher: a ``trials`` row (status ``not_started``, the reason in ``error``) for each
    refused proposal, so the table says what the searcher chose not to run and why."""

    root: Location

    def __call__(self, row_id: str, config: Mapping, reason: str) -> None:
        row = trial_row(row_id, dict(config), TrialRecord(), NOT_STARTED, reason, wall_seconds=0.0)
        write_table_atomic([row], TRIAL_SCHEMA, SearchRun(self.root).trials_dir)


def search_admission(root: Location, model: CostModel, clock: BudgetClock) -> Admission:
    """The admission of the search in ``root``: dominance by the probes its ``search.json`` records (none: no rule),
    and the first-epoch fit, calibrated on the trials' own measured epochs."""
    probes = SearchRun(root).probe_records
    dominance = ProbeDominance(frozenset((p["backbone"], int(p["resolution"])) for p in probes if not p.get("subset")),
                               model.num_blocks) if probes else None
    # No prior from the probes: their seconds include scikit-learn's fit and per-batch overheads, which dominate small
    # images (digits at 32 px gave 5-26 s per GFLOP and refused every fine-tune of the default search). Trial epochs
    # calibrate the fit as they are measured; until the first one, every config may start.
    return Admission(dominance, FirstEpochFit(model, clock, None))


def stopped_for_time(trials: pd.DataFrame, samples: int) -> bool:
    """Whether admission ended the search before its samples: it refused configs for the time left (their
    ``not_started`` rows) and Ray started fewer trials than ``samples``. The time budget ended such a search as
    surely as Ray's clock does, only earlier: the summary says so, and what one fine-tune epoch needs."""
    if trials.empty:
        return False
    refused = trials["status"].eq(NOT_STARTED)
    started = int((~refused & ~trials["probe"].eq(True)).sum())
    return bool(refused.any()) and started < samples
