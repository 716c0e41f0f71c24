"""Trial schedulers of a search, built by :func:`make_scheduler`; ASHA that survives a driver restart.

``make_scheduler(name, spec, root)`` is the one place a scheduler is built (``tune-tl search``, the
benchmarks and the replay simulator call it): ``cost-asha`` (the default; rungs in predicted training cost,
:mod:`tune_tl.search.cost_asha`), ``asha`` (rungs in epochs: the old default), ``pasha`` (progressive
maximum budget, :mod:`tune_tl.search.pasha`) and ``fifo`` (no early stopping).

``ReplayASHA`` (:mod:`tune_tl.search.replay_asha`) is ASHA whose rungs survive a driver restart.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune.schedulers import FIFOScheduler

from tune_tl.search.cost_asha import CostASHA
from tune_tl.search.options import SCHEDULERS
from tune_tl.search.pasha import PASHA
from tune_tl.search.replay_asha import ReplayASHA
from tune_tl.store.storage import Location
from tune_tl.training.cost_model import CostModel

__all__ = ["SCHEDULERS", "ReplayASHA", "make_scheduler"]


def make_scheduler(name: str, spec, root: str | Path | Location, metric: str = "val_acc", mode: str = "max",
                   cost_model: CostModel | None = None, unit: float | None = None):
    """The Ray ``TrialScheduler`` called ``name`` for ``spec``'s budget, recording under ``root``.

    ``spec`` needs only ``spec.budget`` (``max_epochs``, ``grace_period``, ``reduction_factor``).
    Every scheduler but ``fifo`` decides on ``metric`` reported each epoch with ``epoch``; ``asha`` and
    ``cost-asha`` rebuild their rungs from ``root``'s Parquet results after ``tune-tl resume``.
    ``cost-asha`` runs its clock on ``cost_model``'s predictions in units of ``unit`` (a search passes both,
    :attr:`tune_tl.search.plan.SearchPlan.rung_unit`); without a model, on measured ``epoch_seconds`` (the replay simulator).
    """
    budget = spec.budget
    common = dict(metric=metric, mode=mode, grace_period=budget.grace_period, reduction_factor=budget.reduction_factor)
    if name == "asha":
        return ReplayASHA(root, time_attr="epoch", max_t=budget.max_epochs, **common)
    if name == "cost-asha":
        return CostASHA(root, max_epochs=budget.max_epochs, cost_model=cost_model, unit=unit, **common)
    if name == "pasha":
        return PASHA(max_epochs=budget.max_epochs, **common)
    if name == "fifo":
        return FIFOScheduler()
    raise ValueError(f"unknown scheduler {name!r}; expected one of {SCHEDULERS}")
