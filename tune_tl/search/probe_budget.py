"""How much of a time budget stage 0 may spend, and what each probe is predicted to cost before it runs.

A probe's work is one forward pass of every train and val image through its backbone (the fit on the pooled
features takes a fraction of that): ``images × forward FLOPs per image`` (the plan's ``CostModel.image_flops``:
counted once per search, not again per probe).
Seconds per FLOP come from the machine itself: a forward of :data:`RATE_IMAGES` images of the cheapest backbone
(after a one-image warm-up) before the first probe, then every finished probe's measured seconds over its predicted FLOPs (the latest wins).
Where the probes' passes run in bfloat16 (``batches.frozen_dtype``) the same images are also timed in float32, the
dtype trials train in (:attr:`ProbeBudget.float32_factor`, ``frozen_features.float32_slowdown``).

The probes may spend :data:`PROBE_SHARE` of ``budget.time`` (a third: on a 600-s budget, 200 s; on the
medical-scan folder of issue 30 three probes took 366 of 600 s and left no fine-tune time). ``search.probes``
runs the cheapest probe first, then each next one only while its predicted seconds fit what is left of the share;
the rest are ranked by LogME on :data:`LOGME_IMAGES` stratified train images and only the best is probed, on as
many stratified train images as the share has time for (scored on all of val), if that is at least
:data:`MIN_SUBSET_SHARE` of them (else none is: neither ranked nor probed), or on all of them if that is at least
:data:`WHOLE_SPLIT_SHARE`. When not even the cheapest probe
fits, it runs on a stratified subset of train (and of val, if val alone does not fit), so a search always ends
with a model to export.

    >>> budget = ProbeBudget.for_search(600.0)
    >>> budget.allowed
    200.0
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np

from tune_tl.data.types import FileSplit, Split
from tune_tl.training.cost_model import CostModel

#: The share of ``budget.time`` (``--time-budget``) that stage-0 probes may spend: the rest is for fine-tunes.
PROBE_SHARE = 1 / 3
#: Images of the cheapest backbone timed before the first probe to turn FLOPs into this machine's seconds.
RATE_IMAGES = 32
#: Stratified train images on which probes that did not fit the share are ranked by LogME.
LOGME_IMAGES = 200
#: The fewest train images per class a subset probe fits on (its cross-validation needs a few).
MIN_PER_CLASS = 2
#: The smallest share of train a best-ranked probe (one that did not fit in full) is fitted on; with less time left it
#: is not probed. A probe on fewer images scores below what its backbone reaches (on real sets: 75-82 % on 166-365
#: of about 1,200 images, against 87-89 % for the probes on all of them), enters the study as that backbone's figure,
#: and costs as much as a fine-tune epoch (45-60 s): it misleads the sampler and takes the fine-tunes' time.
MIN_SUBSET_SHARE = 0.5
#: A subset probe that would take at least this share of train runs on all of it instead: only a probe on every image
#: keeps the freeze-boundary activations its backbone's fine-tunes start from. On chest X-rays the Lite2 probe ran on
#: 1,571 of 1,601 train images; its two fine-tunes then decoded every image in their first epoch (157 and 201 s, against
#: 55 s for an epoch that reads the boundary) and no third fine-tune started. Three quarters, not more: a best-ranked
#: probe is priced at the seconds per FLOP of the probe before it, and the dearer backbone runs more FLOPs per second.
#: In nine 600 s photo searches whose Lite2 probe (at 260 px, after Lite1's) ran on a subset, its seconds scaled to every
#: image were 0.75 to 0.86 of the price (median 0.80): a probe priced to fit three quarters of train fits about all of it.
WHOLE_SPLIT_SHARE = 0.75


def probe_flops(costs: CostModel, backbone: str, split: Split | FileSplit) -> float:
    """Predicted FLOPs of a probe of ``backbone`` on ``split``: one forward of every train and val image."""
    return costs.image_flops(backbone, split.resolution) * (len(split.train_y) + len(split.val_y))


@dataclass
class ProbeBudget:
    """The seconds stage 0 may spend (``None``: no limit), what it spent, and this machine's seconds per FLOP."""

    allowed: float | None
    started: float = field(default_factory=time.monotonic)
    rate: float | None = None
    #: How many times longer the calibration's images take in float32 than in the probes' dtype
    #: (``batches.frozen_dtype``: bfloat16 on a CPU that runs it natively, 1 otherwise). Trials train in float32, so
    #: the probes' seconds are scaled by it where they price a trial or the end (``admission.probe_rate``).
    float32_factor: float = 1.0

    @classmethod
    def for_search(cls, time_budget: float | None) -> ProbeBudget:
        return cls(None if time_budget is None else PROBE_SHARE * time_budget)

    @property
    def left(self) -> float:
        return math.inf if self.allowed is None else self.allowed - (time.monotonic() - self.started)

    def seconds(self, flops: float) -> float | None:
        """Predicted seconds of ``flops`` (``None`` before any measurement)."""
        return None if self.rate is None else flops * self.rate

    def fits(self, flops: float) -> bool:
        predicted = self.seconds(flops)
        return predicted is None or predicted <= self.left

    def measured(self, flops: float, seconds: float) -> None:
        if flops > 0 and seconds > 0:
            self.rate = seconds / flops


def stratified_subset(split: Split | FileSplit, train: int | None, val: int | None, seed: int) -> Split | FileSplit:
    """``split`` with at most ``train`` train and ``val`` val images (``None``: all), each class keeping its share
    (at least :data:`MIN_PER_CLASS` train images where it has them), drawn with ``seed``."""
    keep_train = _stratified(split.train_y, train, seed, MIN_PER_CLASS)
    keep_val = _stratified(split.val_y, val, seed + 1, 1)
    if isinstance(split, FileSplit):
        return dataclasses.replace(split, train_files=tuple(np.asarray(split.train_files)[keep_train]), train_y=split.train_y[keep_train],
                                   val_files=tuple(np.asarray(split.val_files)[keep_val]), val_y=split.val_y[keep_val],
                                   test_files=None, test_y=None)
    return Split(split.train_x[keep_train], split.train_y[keep_train], split.val_x[keep_val], split.val_y[keep_val])


def _stratified(labels: np.ndarray, n: int | None, seed: int, minimum: int) -> np.ndarray:
    """Sorted indices of at most ``n`` of ``labels`` (all when ``None`` or enough), in proportion to each class."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = min(len(members), max(minimum, round(n * len(members) / len(labels))))
        keep.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(keep))


def train_images_that_fit(budget: ProbeBudget, per_image: float, val_images: int, spent: float = 0.0) -> int | None:
    """How many train images a probe scored on ``val_images`` val images can take in what is left of ``budget``
    once ``spent`` more FLOPs have run (``None``: no measurement yet, or no limit; 0 or less: not even val fits)."""
    if budget.rate is None or budget.allowed is None:
        return None
    return math.floor((budget.left - spent * budget.rate) / (per_image * budget.rate)) - val_images
