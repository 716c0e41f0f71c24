"""What the driver does once the last trial has ended, before the summary: keep the val predictions an ensemble
needs, select the ensemble on them, and score the shipped model on the test split once (when there is one).

All of it reads only what the search has already chosen; nothing here feeds back into a choice. It comes out of the
time budget: the Tuner gets the budget less :func:`wrap_up_seconds`, so a 600 s search ends near 600 s, not minutes
after (on 1,600 photos at 224 px the end took 110-240 s of forward passes before it was reserved).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from tune_tl.data.types import FileSplit, Split
from tune_tl.errors import TuneTLError
from tune_tl.models import Backbone
from tune_tl.search.admission import probe_rate
from tune_tl.search.ensemble import ensemble_search
from tune_tl.search.held_out import score_on_test
from tune_tl.search.val_predictions import record_val_predictions
from tune_tl.store.search_run import SearchRun
from tune_tl.training.cost_model import CostModel

log = logging.getLogger(__name__)

#: The most of the time budget kept for the end: the prediction prices every kept trial, which a short search may not have.
WRAP_UP_SHARE = 1 / 6


def finish_search(run: SearchRun, splits: dict[int, Split | FileSplit], tests: dict[int, Split | FileSplit],
                  backbones: dict[str, Backbone], cache: str | None) -> None:
    """Val predictions (``search.val_predictions``), the ensemble (``search.ensemble``), the test score (``search.held_out``)."""
    started = time.monotonic()
    try:
        kept = record_val_predictions(run, splits, backbones, cache)
        if kept.probs:
            ensemble_search(run)
    except TuneTLError as exc:  # the search itself is done and recorded: say why there is no ensemble, do not fail it
        log.warning("no ensemble: %s", exc)
    score_on_test(run, tests, backbones, cache)
    log.info("end of search: val predictions, ensemble and test score took %.0f s", time.monotonic() - started)


def wrap_up_seconds(model: CostModel, probes: Sequence[Mapping], kept: int, test_images: int, backbone: str, budget: float) -> float:
    """Predicted seconds of :func:`finish_search`, at most :data:`WRAP_UP_SHARE` of ``budget``: forward passes of the
    ``kept`` trials over val, and of them and every probe's backbone over ``test_images``, priced at ``backbone``'s
    forward FLOPs per image (the best-ranked one, which the textbook trials use) and the probes' measured seconds per
    FLOP (they were forward passes in this driver too). 0 without a probe to calibrate on."""
    rate = probe_rate(probes, model, 1, 1)
    if rate is None or backbone not in model.blocks:
        return 0.0
    forward = max(sum(flops) for flops in model.blocks[backbone].values())
    return min(WRAP_UP_SHARE * budget, rate * forward * (kept * model.val_images + (kept + len(probes)) * test_images))
