"""Where the search's scheduler compared trials, as the learning-curves plot draws it: the rungs and their clock.

The scheduler owns its rungs (:mod:`tune_tl.search.cost_asha`); this module only reads what it recorded
(:mod:`tune_tl.store.scheduler_record`), so the report needs nothing from ``search/``. Cost-aware ASHA
records its rungs, its unit and its cost model in ``scheduler.json``: the rungs are read from there, never
re-guessed, and the curves are put on the same clock by predicting each recorded epoch's cost again from
its trial's config (:func:`tune_tl.training.cost_model.recorded_costs`). That clock is drawn in units of
cost-aware ASHA's unit, a whole-model fine-tune epoch of the search's first backbone; the caption converts
the unit to seconds with the search's own calibration (the median of measured over predicted epochs), for
people only. A search from before the cost model has rungs in measured training seconds and is drawn so.
Epoch ASHA and PASHA build Ray's rungs from the budget in ``search.json`` with the same function
(``cost_rungs`` with a unit of one epoch). FIFO has none.

    >>> scheduler_rungs(SearchRun("results/demo"))   # doctest: +SKIP
    Rungs(milestones=[1.0, 3.0], clock='cost', scheduler='cost-asha', ...)
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tune_tl.config.spec import BudgetSpec, cost_rungs
from tune_tl.store.scheduler_record import recorded_rungs
from tune_tl.store.search_run import SearchRun
from tune_tl.training.cost_model import TRAINING_COST, CostModel, recorded_cost_model, recorded_costs, seconds_per_flop, table_configs

#: The clocks a scheduler compares trials on: epochs, predicted cost (cost-aware ASHA), measured seconds (its older searches).
CLOCKS = ("epoch", "cost", "seconds")


@dataclass(frozen=True)
class Rungs:
    """The rung milestones on the scheduler's clock: epochs, units of predicted cost, or training seconds."""

    milestones: list[float]
    clock: str
    scheduler: str
    #: Cost-aware ASHA's model and unit (FLOPs), for the ``cost`` clock.
    model: CostModel | None = None
    unit: float | None = None

    @property
    def label(self) -> str:
        return "cost-aware ASHA rung" if self.clock != "epoch" else f"{self.scheduler.upper()} rung"

    @property
    def axis_label(self) -> str:
        return {"epoch": "epoch", "seconds": "training seconds (the cost-aware scheduler's clock)",
                "cost": "predicted cost (whole-model fine-tune epochs: the cost-aware scheduler's clock)"}[self.clock]

    def positions(self, trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.Series:
        """Each ``epochs`` row's place on the clock (same index); NaN for a trial with no config yet (still running)."""
        if self.clock == "epoch":
            return epochs["epoch"].astype(float)
        if self.clock == "seconds":
            return epochs.sort_values("epoch").groupby("trial_id")["epoch_seconds"].cumsum().reindex(epochs.index)
        costed = recorded_costs(self.model, table_configs(trials), epochs)
        return (costed[TRAINING_COST] / self.unit).reindex(epochs.index)

    def seconds_per_unit(self, trials: pd.DataFrame, epochs: pd.DataFrame) -> float | None:
        """What one unit of the ``cost`` clock took on the machine that ran the search: calibration, for people."""
        if self.clock != "cost":
            return None
        costed = recorded_costs(self.model, table_configs(trials), epochs)
        ratio = seconds_per_flop(costed["epoch_cost"].tolist(), costed["epoch_seconds"].tolist())
        return None if ratio is None else ratio * self.unit

    def caption(self, seconds_per_unit: float | None = None) -> str:
        """One sentence for the page: where the dotted lines are, and where they come from."""
        if not self.milestones:
            return ("Cost-aware ASHA has not recorded its rungs yet (scheduler.json)." if self.clock != "epoch" else "")
        at = ", ".join(f"{m:.3g}" for m in self.milestones)
        if self.clock == "cost":
            took = f" (one took about {seconds_per_unit:.3g} s here, calibrated on the recorded epochs)" if seconds_per_unit else ""
            return (f"Dotted lines: the cost-aware ASHA rungs at {at} units of predicted cost, as the scheduler recorded them in "
                    f"scheduler.json. A unit is the predicted FLOPs of one whole-model fine-tune epoch of the search's first "
                    f"backbone{took}; each curve's x is its epochs' predicted cost, the clock the scheduler decided on.")
        if self.clock == "seconds":
            return f"Dotted lines: the cost-aware ASHA rungs at {at} training seconds, as the scheduler recorded them in scheduler.json."
        return f"Dotted lines: the {self.scheduler.upper()} rungs at epochs {at} (grace_period × reduction_factor^k, up to max_epochs)."


def asha_rungs(budget: BudgetSpec | None) -> list[float]:
    """Ray's ASHA rung epochs for ``budget`` (``SearchRun.budget``): ``grace_period × reduction_factor^k``, up to and
    including ``max_epochs`` (Ray's rung count); ``[]`` without a budget."""
    if budget is None:
        return []
    return cost_rungs(1, budget.grace_period, budget.max_epochs, budget.reduction_factor)


def scheduler_rungs(run: SearchRun) -> Rungs:
    """The rungs the search in ``run`` used, on its scheduler's clock (``SearchRun.scheduler``)."""
    scheduler = run.scheduler
    if scheduler == "cost-asha":
        recorded = recorded_cost_model(run)
        if recorded is None:  # a search from before the cost model (or no scheduler.json): measured seconds
            return Rungs(recorded_rungs(run), "seconds", scheduler)
        model, unit = recorded
        return Rungs([m / unit for m in recorded_rungs(run)], "cost", scheduler, model, unit)
    return Rungs([] if scheduler == "fifo" else asha_rungs(run.budget), "epoch", scheduler)
