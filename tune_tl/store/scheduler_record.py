"""``scheduler.json``: what cost-aware ASHA recorded (its unit, its rungs, its cost model), written and read here.

The scheduler (``search.cost_asha``) writes it; ``tune-tl resume`` and the report (``analysis.rungs``) read it
back, so the rungs have one owner and are never re-guessed. The file's name is ``SearchRun.scheduler_file``'s.
"""

from __future__ import annotations

import json
from typing import Any

from tune_tl.config.spec import cost_rungs
from tune_tl.store.results import write_json_atomic
from tune_tl.store.search_run import SearchRun


def write_scheduler_state(run: SearchRun, state: dict[str, Any]) -> None:
    """Replace ``scheduler.json`` with ``state`` (written whole, then renamed)."""
    write_json_atomic(state, run.scheduler_file)


def recorded_rungs(run: SearchRun) -> list[float]:
    """The rungs, on the scheduler's clock, that the search's cost-aware ASHA recorded in ``scheduler.json``.

    ``[]`` while it has not recorded them (no file yet). A file from before rungs were recorded holds only
    the unit: the rungs are rebuilt from it and the search's budget, as ``tune-tl resume`` does.
    """
    state = scheduler_state(run)
    if isinstance(state.get("rungs"), list):
        return [float(m) for m in state["rungs"]]
    budget = run.budget
    if not isinstance(state.get("unit_seconds"), (int, float)) or budget is None:
        return []
    return cost_rungs(float(state["unit_seconds"]), budget.grace_period, budget.max_epochs, budget.reduction_factor)


def scheduler_state(run: SearchRun) -> dict:
    """``scheduler.json`` as a dict; ``{}`` when it is missing or unreadable (nothing recorded, as far as we know)."""
    file = run.scheduler_file
    try:
        state = json.loads(file.read_text()) if file.is_file() else {}
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}
