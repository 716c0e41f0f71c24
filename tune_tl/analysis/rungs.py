"""Where the search's scheduler compared trials, as the learning-curves plot draws it.

The scheduler owns its rungs (:mod:`tune_tl.search.cost_asha`); this module only asks it. Cost-aware
ASHA learns its unit from the first trial and records the rungs in ``scheduler.json``: they are read
from there, never re-guessed from the results. Epoch ASHA and PASHA build Ray's rungs from the budget in
``search.json`` with the same function (``cost_rungs`` with a unit of one epoch). FIFO has none.

    >>> scheduler_rungs(SearchRun("results/demo"))   # doctest: +SKIP
    Rungs(milestones=[7.3, 14.5], seconds=True, scheduler='cost-asha')
"""

from __future__ import annotations

from dataclasses import dataclass

from tune_tl.search.cost_asha import cost_rungs, recorded_rungs
from tune_tl.store.search_run import SearchRun


@dataclass(frozen=True)
class Rungs:
    """The rung milestones, on the scheduler's clock: training seconds (``seconds``) or epochs."""

    milestones: list[float]
    seconds: bool
    scheduler: str

    @property
    def label(self) -> str:
        return "cost-aware ASHA rung" if self.seconds else f"{self.scheduler.upper()} rung"

    def caption(self) -> str:
        """One sentence for the page: where the dotted lines are, and where they come from."""
        if not self.milestones:
            return ("Cost-aware ASHA has not recorded its rungs yet (scheduler.json): it learns them from the first "
                    "trial's first epoch." if self.seconds else "")
        at = ", ".join(f"{m:.3g}" for m in self.milestones)
        if self.seconds:
            return f"Dotted lines: the cost-aware ASHA rungs at {at} training seconds, as the scheduler recorded them in scheduler.json."
        return f"Dotted lines: the {self.scheduler.upper()} rungs at epochs {at} (grace_period × reduction_factor^k, up to max_epochs)."


def asha_rungs(search: dict) -> list[float]:
    """Ray's ASHA rung epochs for the budget in ``search.json``: ``grace_period × reduction_factor^k``, up to and
    including ``max_epochs`` (Ray's rung count); ``[]`` without a budget."""
    budget = search.get("budget") or {}
    grace, factor, top = budget.get("grace_period"), budget.get("reduction_factor"), budget.get("max_epochs")
    if not (grace and factor and top) or factor <= 1:
        return []
    return cost_rungs(1, grace, top, factor)


def scheduler_rungs(run: SearchRun) -> Rungs:
    """The rungs the search in ``run`` used, on its scheduler's clock (``search.json``'s ``options.scheduler``)."""
    scheduler = (run.metadata.get("options") or {}).get("scheduler") or "asha"
    if scheduler == "cost-asha":
        return Rungs(recorded_rungs(run), seconds=True, scheduler=scheduler)
    return Rungs([] if scheduler == "fifo" else asha_rungs(run.metadata), seconds=False, scheduler=scheduler)
