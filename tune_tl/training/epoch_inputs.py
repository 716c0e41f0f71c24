"""What an epoch trains on: images through the whole model, or cached rows through what follows the cache.

``fit`` keeps one :class:`EpochInputs` and asks it, at the start of every epoch, which of three inputs the
epoch uses; :func:`~tune_tl.training.frozen_features.cached_prefix_blocks` decides:

* images: uint8 batches, augmented, mixed and normalised on the device, through the whole model;
* pooled features of the frozen backbone (``training.frozen_features``), through the head;
* activations at the freeze boundary (``training.boundary_cache``), through ``blocks[k:]``, pooling and head.

Whichever it is, the loop reads a batch the same way (``load``, then ``batch`` under autocast), runs
``module`` on it and calls ``evaluate``. The choice changes at most once in a run (when LP→FT's probe
ends); cached rows are computed when an epoch first needs them and kept while the choice stands.

    >>> inputs = EpochInputs(model, split, cfg, normalise, augment, mixer, resident)
    >>> inputs.start_epoch()
    >>> for item in inputs.load(indices):
    ...     x, y = inputs.batch(item)
    ...     logits = inputs.module(x)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from tune_tl.data.augment import Augment
from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import FileSplit, Split
from tune_tl.training.batches import batches, to_device
from tune_tl.training.boundary_cache import boundary_activations, boundary_bytes, memory_cap
from tune_tl.training.evaluate import Evaluation, evaluate_cached, evaluate_split
from tune_tl.training.forward_once import probe_boundary
from tune_tl.training.frozen_features import frozen_features, log_cache_blocked, model_cached_blocks

log = logging.getLogger(__name__)

MB = 2**20


class EpochInputs:
    """One ``fit``'s inputs, epoch by epoch: the model's input for each batch and the module that runs on it.

    Attributes:
        module: What turns a batch into logits: the model, its head, or the model from block k on.
        cached_blocks: Leading backbone blocks served from a cache this epoch: 0, k, or all of them (pooled).
        pooled: Whether the head trains on pooled features (the ``cached_features`` column).
    """

    def __init__(self, model: nn.Module, split: Split | FileSplit, cfg: Any, normalise: Normaliser, augment: Augment,
                 mixer: Callable | None, resident: dict):
        """``cfg`` is ``fit``'s ``FitConfig``; ``augment``, ``mixer`` and ``resident`` are the ones ``fit`` checkpoints and keeps."""
        self.model, self.split, self.cfg = model, split, cfg
        self.normalise, self.augment, self.mixer, self.resident = normalise, augment, mixer, resident
        self.module: nn.Module = model
        self.cached_blocks, self.pooled = 0, False
        self._rows: tuple[torch.Tensor, torch.Tensor] | None = None
        self._decided: int | None = None  # the cut the current inputs were built for (None: no epoch yet)

    def start_epoch(self) -> None:
        """Choose this epoch's inputs from the model's freezing now; compute cached rows the first time they are needed."""
        if self._decided is None and self.cfg.feature_cache is not None:
            log_cache_blocked(self.model, self.cfg.augment, self.cfg.regularise)
        cut = self._cut()
        if cut == self._decided:
            return
        self._decided = cut
        self.module, self.cached_blocks, self.pooled, self._rows = self.model, 0, False, None
        if cut == 0:
            return
        if cut == self.model.num_blocks:
            self._rows = frozen_features(self.model, self.split, self.cfg.feature_cache, self.normalise, self.cfg.eval_batch_size,
                                         self.resident)
            self.module, self.cached_blocks, self.pooled = self.model.head, cut, True
        elif self._boundary_fits(cut):
            self._rows = probe_boundary(self.model.backbone, cut, self.split, self.normalise, self.cfg.feature_cache)
            if self._rows is None:
                self._rows = boundary_activations(self.model, cut, self.split, self.normalise, self.cfg.eval_batch_size, self.resident)
            else:
                log.info("boundary cache: the output of %d frozen blocks comes from the probe's pass (no block below %d runs)", cut, cut)
            self.module, self.cached_blocks = self.model.from_block(cut), cut

    def load(self, indices: list[np.ndarray]) -> Iterator:
        """One item per training batch, for :meth:`batch`: uint8 images and labels, or the batch's indices."""
        if self._rows is not None:
            return iter(indices)
        return batches(self.split, "train", indices, self.cfg.num_workers, self.resident)

    def batch(self, item) -> tuple[torch.Tensor, torch.Tensor]:
        """The model input and targets of one batch (call under autocast): cached rows, or images made ready on the device."""
        if self._rows is not None:
            return self._rows[0][item], torch.from_numpy(self.split.train_y[item]).to(self.normalise.device)
        x, y = to_device(*item, self.normalise, self.augment)
        if self.mixer is not None:
            x, y = self.mixer(x, y)  # y becomes soft targets, which cross_entropy accepts
        return x, y

    def evaluate(self) -> Evaluation:
        """The model as it is now on the validation images, from the same inputs the epoch trained on."""
        if self._rows is not None:
            return evaluate_cached(self.module, self._rows[1], self.split.val_y, self.cfg.eval_batch_size)
        return evaluate_split(self.model, self.split, self.normalise, self.cfg.eval_batch_size, self.resident, self.cfg.num_workers)

    def _cut(self) -> int:
        if self.cfg.feature_cache is None or isinstance(self.split, FileSplit):
            return 0
        return model_cached_blocks(self.model, self.cfg.augment, self.cfg.regularise)

    def _boundary_fits(self, cut: int) -> bool:
        needed = boundary_bytes(self.model, cut, self.split, self.normalise)
        cap = memory_cap(self.normalise.device, self.cfg.boundary_cache_bytes)
        if needed <= cap:
            return True
        log.info("boundary cache off for this trial: the output of the %d frozen blocks takes %.2f MB for %d images, over its "
                 "%.2f MB cap (FitConfig.boundary_cache_bytes, else a quarter of the free memory); every block runs each batch",
                 cut, needed / MB, len(self.split.train_y) + len(self.split.val_y), cap / MB)
        return False
