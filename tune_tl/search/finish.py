"""What the driver does once the last trial has ended, before the summary: keep the val predictions an ensemble
needs, select the ensemble on them, and score the shipped model on the test split once (when there is one).

All of it reads only what the search has already chosen; nothing here feeds back into a choice. It comes out of the
time budget: the Tuner gets the budget less :func:`wrap_up_seconds`, so a 600 s search ends near 600 s, not minutes
after (on 1,600 photos at 224 px the end took 110-240 s of forward passes before it was reserved). Since 2026-12-07
a kept trial's val probabilities come from its checkpoint, so the end's forward passes are the test split's.
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

#: The most of the time budget kept for the end: the prediction prices members a short search may not have.
WRAP_UP_SHARE = 1 / 6
#: Test passes the end is priced at: the shipped trial and the ensemble's other members. Ensembles had 1 to 3
#: members, the shipped trial among them, in 21 searches of 600 s on four photo sets (stop 45's and this stop's).
TEST_PASSES = 3


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
    selected = time.monotonic()
    score_on_test(run, tests, backbones, cache)
    log.info("end of search: val predictions and ensemble took %.0f s, the test score %.0f s", selected - started,
             time.monotonic() - selected)


def wrap_up_seconds(model: CostModel, probes: Sequence[Mapping], kept: int, test_images: int, backbone: str, budget: float) -> float:
    """Predicted seconds of :func:`finish_search`, at most :data:`WRAP_UP_SHARE` of ``budget``: forward passes over
    ``test_images`` of up to :data:`TEST_PASSES` of the ``kept`` trials and probes, and over val of each probe fitted
    on a subset (it left no cached val features), priced at ``backbone``'s forward FLOPs per image (the best-ranked
    one, which the textbook trials use) and the probes' measured seconds per FLOP (they were forward passes in this
    driver too). The kept trials' val probabilities are read from their checkpoints, not computed. 0 without a probe
    to calibrate on. Priced at the dearest backbone instead, the ends of four 600 s photo searches would have been
    reserved 28 s more than they took on average (13 s as here), to spare one of them an 8-s overrun (its ensemble
    held a Lite2 trial beside Lite1 ones)."""
    rate = probe_rate(probes, model, 1, 1)
    if rate is None or backbone not in model.blocks:
        return 0.0
    forward = max(model.image_flops(backbone, resolution) for resolution in model.blocks[backbone])
    subset_probes = sum(1 for p in probes if p.get("subset"))
    images = min(TEST_PASSES, kept + len(probes)) * test_images + subset_probes * model.val_images
    return min(WRAP_UP_SHARE * budget, rate * forward * images)
