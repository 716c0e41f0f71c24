"""What the driver does once the last trial has ended, before the summary: keep the val predictions an ensemble
needs, select the ensemble on them, and score the shipped model on the test split once (when there is one).

All of it reads only what the search has already chosen; nothing here feeds back into a choice.
"""

from __future__ import annotations

import logging

from tune_tl.data.types import FileSplit, Split
from tune_tl.errors import TuneTLError
from tune_tl.models import Backbone
from tune_tl.search.ensemble import ensemble_search
from tune_tl.search.held_out import score_on_test
from tune_tl.search.val_predictions import record_val_predictions
from tune_tl.store.search_run import SearchRun

log = logging.getLogger(__name__)


def finish_search(run: SearchRun, splits: dict[int, Split | FileSplit], tests: dict[int, Split | FileSplit],
                  backbones: dict[str, Backbone], cache: str | None) -> None:
    """Val predictions (``search.val_predictions``), the ensemble (``search.ensemble``), the test score (``search.held_out``)."""
    try:
        kept = record_val_predictions(run, splits, backbones, cache)
        if kept.probs:
            ensemble_search(run)
    except TuneTLError as exc:  # the search itself is done and recorded: say why there is no ensemble, do not fail it
        log.warning("no ensemble: %s", exc)
    score_on_test(run, tests, backbones, cache)
