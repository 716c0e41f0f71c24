"""Event-driven replay of a Ray Tune scheduler over recorded learning curves, in simulated seconds.

A search on recorded curves costs milliseconds instead of hours: ``W`` simulated workers run the
configs a sampler proposes; each epoch of a trial "finishes" at its start time plus the recorded
epoch seconds; its result goes through the *real* Ray scheduler object (``on_trial_add``,
``on_trial_result``, ``on_trial_complete``, as Ray's ``TuneController`` calls them), and a STOP
ends the trial and frees its worker for the next proposal. What is simulated is what runs.

    >>> from ray.tune.schedulers import ASHAScheduler
    >>> trace = simulate(curves, ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=6),
    ...                  RandomOrder(curves, seed=0), workers=8, budget=600.0)   # doctest: +SKIP
    >>> trace.best_at([150, 300, 600])                                           # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from ray.tune.schedulers import TrialScheduler

from tune_tl.bench.curves import CURVE_COLUMNS

log = logging.getLogger(__name__)

METRIC = "val_acc"


@dataclass(frozen=True)
class Curve:
    """One recorded config: its parameters and, per epoch, validation accuracy and seconds."""

    trial_id: str
    params: dict[str, Any]
    val_acc: np.ndarray
    seconds: np.ndarray

    @property
    def cost(self) -> float:
        """Seconds to train this config to its last recorded epoch."""
        return float(self.seconds.sum())


def curves_from_table(table: pd.DataFrame) -> list[Curve]:
    """Split a curve table (``python -m tune_tl.bench curves``) into one ``Curve`` per trial."""
    params = [c for c in table.columns if c not in CURVE_COLUMNS]
    out = []
    for trial_id, rows in table.sort_values(["trial_id", "epoch"], kind="stable").groupby("trial_id", sort=True):
        first = rows.iloc[0]
        values = {p: first[p] for p in params if not pd.isna(first[p])}
        out.append(Curve(str(trial_id), values, rows["val_acc"].to_numpy(float), rows["epoch_seconds"].to_numpy(float)))
    return out


class Sampler(Protocol):
    """Proposes the next recorded config (``None`` when it has nothing left) and learns from outcomes."""

    def propose(self) -> Curve | None: ...

    def observe(self, curve: Curve, epochs: int, completed: bool) -> None: ...


class SimTrial:
    """The few attributes of ``ray.tune.experiment.Trial`` that schedulers read; hashed by identity
    (MedianStoppingRule keys dicts by trial)."""

    RUNNING, TERMINATED = "RUNNING", "TERMINATED"

    def __init__(self, trial_id: str, config: dict[str, Any]):
        self.trial_id = trial_id
        self.config = config
        self.status = self.RUNNING
        self.last_result: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"SimTrial({self.trial_id})"


class SimController:
    """What schedulers ask of Ray's ``TuneController``: the live trials."""

    def __init__(self):
        self.live: dict[str, SimTrial] = {}

    def get_live_trials(self):
        return list(self.live.values())

    def get_trials(self):
        return list(self.live.values())


@dataclass
class Trace:
    """What one simulated search did: when the best-so-far accuracy improved, and the work done."""

    times: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    started: int = 0
    epochs: int = 0
    stopped: int = 0  # trials a scheduler STOPped before their last epoch
    end: float = 0.0  # simulated seconds when the last trial ended (or the budget ran out)

    def best_at(self, times) -> np.ndarray:
        """Best val_acc found by each of ``times`` (0.0 before any trial reported)."""
        if not self.times:
            return np.zeros(len(np.atleast_1d(times)))
        idx = np.searchsorted(np.asarray(self.times), np.atleast_1d(times), side="right") - 1
        best = np.asarray(self.best)[np.maximum(idx, 0)]
        return np.where(idx >= 0, best, 0.0)


def simulate(curves: list[Curve], scheduler: TrialScheduler, sampler: Sampler, workers: int, budget: float) -> Trace:
    """Replay one search: ``workers`` trials at a time until the sampler runs dry or ``budget`` seconds pass."""
    controller = SimController()
    trace = Trace()
    events: list[tuple[float, int, SimTrial, Curve, int]] = []
    seq = 0

    def start(now: float) -> None:
        nonlocal seq
        curve = sampler.propose()
        if curve is None:
            return
        trace.started += 1
        trial = SimTrial(f"{curve.trial_id}-{trace.started}", dict(curve.params))
        controller.live[trial.trial_id] = trial
        scheduler.on_trial_add(controller, trial)
        heapq.heappush(events, (now + curve.seconds[0], seq, trial, curve, 0))
        seq += 1

    for _ in range(workers):
        start(0.0)
    best = -np.inf
    while events:
        now, _, trial, curve, i = heapq.heappop(events)
        if now > budget:
            trace.end = budget
            break
        trace.epochs += 1
        trace.end = now
        acc = float(curve.val_acc[i])
        if acc > best:
            best = acc
            trace.times.append(now)
            trace.best.append(acc)
        result = {"trial_id": trial.trial_id, "epoch": i + 1, "training_iteration": i + 1, METRIC: acc,
                  "time_total_s": float(curve.seconds[: i + 1].sum()), "time_this_iter_s": float(curve.seconds[i]),
                  "epoch_seconds": float(curve.seconds[i])}
        trial.last_result = result
        decision = scheduler.on_trial_result(controller, trial, result)
        last = i + 1 == len(curve.val_acc)
        if decision == TrialScheduler.STOP or last:
            trace.stopped += int(not last)
            scheduler.on_trial_complete(controller, trial, result)
            trial.status = SimTrial.TERMINATED
            del controller.live[trial.trial_id]
            sampler.observe(curve, i + 1, last)
            start(now)
        else:  # CONTINUE; PAUSE (no Ray scheduler here pauses a lone running trial) continues too
            heapq.heappush(events, (now + curve.seconds[i + 1], seq, trial, curve, i + 1))
            seq += 1
    return trace
