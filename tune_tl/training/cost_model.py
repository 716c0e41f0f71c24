"""Predict what an epoch of a trial costs from its config alone, in counted FLOPs: the same on every machine.

Cost-aware ASHA's clock (:mod:`tune_tl.search.cost_asha`) and the cost-aware sampler
(:mod:`tune_tl.search.cost_sampler`) decide on these predictions, never on measured seconds, so a seeded
search makes the same decisions however busy the machine is. Measured ``epoch_seconds`` only calibrate
the unit into seconds for people (:func:`seconds_per_flop`).

An epoch, per image, is what ``training.loop.fit`` runs:

* a training image runs every block forward; from the first trainable block on, the backward pass adds
  one forward's worth for each trainable block's weight gradient and one for each block's input gradient
  above the first trainable block: 3× a trainable block, 2× the first trainable block and a frozen block
  the gradient passes through (surgical), 1× a frozen block below; the head 3×;
* a validation image runs every block and the head forward once;
* the first epoch trains on ``first_epoch_fraction`` of the train images (a cheaper first rung), later ones on all;
* blocks served from a cache (:func:`cached_prefix`) cost nothing, except in the epoch that starts reading
  the cache: it pays one forward of them over every train and val image (a cold cache, assumed for every
  trial, so the prediction does not depend on which trial ran first), unless the stage-0 probe's one pass
  kept that boundary (``training.forward_once``: :attr:`CostModel.probed_boundaries`), which no trial pays for.

Each block's forward FLOPs are counted once per backbone and resolution with
``torch.utils.flop_counter.FlopCounterMode`` on one image (:func:`block_flops`): convolutions and
matrix products; BatchNorm, activations, pooling and decoding are not counted, nor per-batch overhead.
The batch size does not change the count. Data-parallel workers share the same FLOPs: they change the
seconds, which the calibration absorbs (every trial of a search has the same workers).

    >>> model = build_cost_model(prepared.backbones, prepared.context.data)     # doctest: +SKIP
    >>> model.epoch_cost(TrialConfig(freeze_policy="full"), epoch=1)          # doctest: +SKIP
    13440000000.0
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from tune_tl.config.distributions import Fixed, Range, resolutions_of, values_of
from tune_tl.config.params import PARAMS, TrialConfig
from tune_tl.data.types import PreparedData
from tune_tl.errors import TuneTLError
from tune_tl.models import Backbone
from tune_tl.models.freezing import leading_frozen
from tune_tl.store.scheduler_record import scheduler_state
from tune_tl.store.search_run import SearchRun
from tune_tl.training.forward_once import boundary_cuts
from tune_tl.training.frozen_features import cached_blocks
from tune_tl.training.recipe import freeze_policy, inputs_vary

#: A trial's cumulative predicted cost in FLOPs after an epoch: cost-aware ASHA's clock (and its column in :func:`recorded_costs`).
TRAINING_COST = "training_cost"

def cached_prefix(cfg: TrialConfig, trains: Sequence[bool], feature_cache: bool, chainable: bool) -> int:
    """How many leading blocks an epoch of ``cfg`` with trainable blocks ``trains`` reads from a cache instead of running:
    the training loop's own rule (``training.frozen_features.cached_blocks``), off when the feature cache is."""
    if not feature_cache:
        return 0
    return cached_blocks(leading_frozen(trains), len(trains), chainable, inputs_vary(cfg))


def block_flops(backbone: Backbone, resolutions: Sequence[int]) -> dict[int, tuple[float, ...]]:
    """Forward FLOPs of one image through each of ``backbone``'s blocks (stem first), at each of ``resolutions``.

    Hooks on each block's modules read ``FlopCounterMode``'s running total before and after them during one
    forward per resolution, in eval mode, of a copy of ``backbone.features`` on the meta device (shapes only: no
    arithmetic, and the weights are copied once). FLOPs outside every block (e.g. a final pooling or projection)
    go to the last block, so the blocks add up to the whole network. The copy takes the hooks; ``backbone`` is untouched.
    """
    features = copy.deepcopy(backbone.features).to("meta").eval()
    twin = dict(zip(map(id, backbone.features.modules()), features.modules(), strict=True))  # the same modules, in the same order
    counter = FlopCounterMode(display=False)
    flops: list[float] = []

    def watch(index: int, module: torch.nn.Module) -> None:
        if id(module) not in twin:  # a container made for the split (Lite's stem): its parts run
            for child in module.children():
                watch(index, child)
            return
        started = []
        module = twin[id(module)]
        module.register_forward_pre_hook(lambda *_: started.append(counter.get_total_flops()))
        module.register_forward_hook(lambda *_: flops.__setitem__(index, flops[index] + counter.get_total_flops() - started.pop()))

    for index, block in enumerate(backbone.blocks):
        watch(index, block)
    counts = {}
    for resolution in resolutions:
        flops[:] = [0.0] * len(backbone.blocks)
        with counter, torch.no_grad():  # entering the mode again starts its count at zero
            features(torch.zeros(1, 3, resolution, resolution, device="meta"))
            flops[-1] += counter.get_total_flops() - sum(flops)
        counts[resolution] = tuple(float(f) for f in flops)
    return counts


@dataclass(frozen=True)
class CostModel:
    """Predicted FLOPs of a trial's epochs: per-block counts of each backbone at each resolution, plus the data's size.

    Plain numbers only, so it pickles with the scheduler and the sampler (``tune-tl resume`` restores them)
    and round-trips through JSON (``scheduler.json``: the report reads it back).
    """

    #: backbone name -> resolution -> forward FLOPs of one image through each block.
    blocks: Mapping[str, Mapping[int, tuple[float, ...]]]
    #: backbone name -> width of its pooled features (the head's input).
    num_features: Mapping[str, int]
    num_classes: int
    train_images: int
    val_images: int
    #: Whether trials may read the feature cache (``--no-feature-cache`` and streamed data turn it off).
    feature_cache: bool = True
    #: backbone name -> whether a frozen prefix's activations can be cached (``Backbone.chainable``).
    chainable: Mapping[str, bool] = field(default_factory=dict)
    #: backbone name -> resolution -> the freeze boundaries the stage-0 probe's pass kept (``training.forward_once``).
    probed_boundaries: Mapping[str, Mapping[int, tuple[int, ...]]] = field(default_factory=dict)

    @property
    def default_backbone(self) -> str:
        """The backbone of a config that names none (a search with one backbone)."""
        return next(iter(self.blocks))

    @property
    def num_blocks(self) -> dict[str, int]:
        return {name: len(next(iter(by_r.values()))) for name, by_r in self.blocks.items()}

    def trainable_blocks(self, cfg: TrialConfig, epoch: int) -> list[bool]:
        """Which blocks train in ``epoch`` (1-based): none in the linear-probe epochs, then the freeze policy's."""
        n = len(self._blocks(cfg))
        if epoch <= cfg.lp_epochs:
            return [False] * n
        # The trial's own policy, clamped: a candidate the sampler scores may pair another backbone's block count with this one.
        policy = freeze_policy(cfg)
        policy = dataclasses.replace(policy, freeze_blocks=min(policy.freeze_blocks, n), train_block=min(policy.train_block, n - 1))
        return policy.trainable_mask(n)

    def epoch_cost(self, cfg: TrialConfig, epoch: int) -> float:
        """Predicted FLOPs of ``cfg``'s ``epoch`` (1-based): train and val images, backward included."""
        flops = self._blocks(cfg)
        trains = self.trainable_blocks(cfg, epoch)
        cached, fills = self._cache(cfg, epoch, trains)
        first = leading_frozen(trains)
        train = sum(f * (1 + (i > first) + (i >= first and trains[i])) for i, f in enumerate(flops) if i >= cached)
        val = sum(flops[cached:])
        head = self._head(cfg)
        train_images = self.train_images * (cfg.first_epoch_fraction if epoch == 1 else 1.0)  # a subset first rung
        cost = train_images * (train + 3 * head) + self.val_images * (val + head)
        if fills:
            cost += (self.train_images + self.val_images) * sum(flops[:cached])
        return float(cost)

    def reads_pixels(self, cfg: TrialConfig, epoch: int) -> bool:
        """Whether ``cfg``'s ``epoch`` decodes every image and runs the stem: no cached prefix, or the epoch that fills
        the cache. Such an epoch costs more seconds per counted FLOP than one reading a cache (decoding, augmentation
        and the wide early activations are not in the count): ``search.admission`` calibrates the two kinds apart."""
        cached, fills = self._cache(cfg, epoch, self.trainable_blocks(cfg, epoch))
        return not cached or fills

    def _cache(self, cfg: TrialConfig, epoch: int, trains: Sequence[bool]) -> tuple[int, bool]:
        """``(blocks read from a cache, whether this epoch fills it)`` for ``epoch``'s trainable blocks ``trains``: a
        trial's first epoch with that prefix fills it, unless the probe's pass kept the boundary (:meth:`_probed`)."""
        chainable = self.chainable.get(cfg.backbone or self.default_backbone, False)
        cached = cached_prefix(cfg, trains, self.feature_cache, chainable)
        before = cached_prefix(cfg, self.trainable_blocks(cfg, epoch - 1), self.feature_cache, chainable) if epoch > 1 else 0
        return cached, bool(cached) and cached != before and not self._probed(cfg, cached)

    def trial_cost(self, cfg: TrialConfig, epochs: int) -> float:
        """Predicted FLOPs of ``cfg``'s first ``epochs`` epochs."""
        return float(sum(self.epoch_cost(cfg, e) for e in range(1, epochs + 1)))

    def image_flops(self, backbone: str, resolution: int) -> float:
        """One forward of one ``resolution``-px image through all of ``backbone``: what a probe spends per image."""
        return float(sum(self.blocks[backbone][resolution]))

    def fine_tune_epoch(self, backbone: str | None = None, resolution: int | None = None) -> float:
        """One whole-model fine-tune epoch of ``backbone`` (default: the first) at ``resolution`` (default: its largest)."""
        backbone = backbone or self.default_backbone
        resolution = resolution or max(self.blocks[backbone])
        return self.epoch_cost(TrialConfig.from_dict({"backbone": backbone, "resolution": resolution, "freeze_policy": "full"}), 1)

    def _blocks(self, cfg: TrialConfig) -> tuple[float, ...]:
        backbone = cfg.backbone or self.default_backbone
        by_resolution = self.blocks.get(backbone)
        if by_resolution is None or cfg.resolution not in by_resolution:
            raise ValueError(f"the cost model has no FLOP count for backbone {backbone!r} at {cfg.resolution} px "
                             f"(it has {', '.join(f'{b} at {sorted(r)}' for b, r in self.blocks.items())})")
        return by_resolution[cfg.resolution]

    def _probed(self, cfg: TrialConfig, cut: int) -> bool:
        """Whether the probe's pass kept the output of ``cfg``'s first ``cut`` blocks (never the pooled features:
        a head-only trial's first epoch is priced as a cold cache, as before)."""
        return cut in self.probed_boundaries.get(cfg.backbone or self.default_backbone, {}).get(cfg.resolution, ())

    def _head(self, cfg: TrialConfig) -> float:
        """Forward FLOPs of the head for one image (a multiply-add is two)."""
        d = self.num_features[cfg.backbone or self.default_backbone]
        if cfg.head == "mlp":
            hidden = cfg.head_hidden or PARAMS["head_hidden"].default
            return 2.0 * (d * hidden + hidden * self.num_classes)
        return 2.0 * d * self.num_classes

    def keep(self, names: Sequence[str]) -> CostModel:
        """Only the backbones ``names``, in that order (the first becomes the default), as after ranking."""
        return dataclasses.replace(self, blocks={n: self.blocks[n] for n in names}, num_features={n: self.num_features[n] for n in names},
                                   chainable={n: self.chainable[n] for n in names if n in self.chainable})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (resolutions become strings); :meth:`from_dict` reads it back."""
        return {"blocks": {b: {str(r): list(f) for r, f in by_r.items()} for b, by_r in self.blocks.items()},
                "num_features": dict(self.num_features), "num_classes": self.num_classes, "train_images": self.train_images,
                "val_images": self.val_images, "feature_cache": self.feature_cache, "chainable": dict(self.chainable),
                "probed_boundaries": {b: {str(r): list(c) for r, c in by_r.items()} for b, by_r in self.probed_boundaries.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostModel:
        blocks = {b: {int(r): tuple(float(x) for x in f) for r, f in by_r.items()} for b, by_r in data["blocks"].items()}
        probed = {b: {int(r): tuple(int(k) for k in c) for r, c in by_r.items()} for b, by_r in data.get("probed_boundaries", {}).items()}
        return cls(blocks, dict(data["num_features"]), int(data["num_classes"]), int(data["train_images"]), int(data["val_images"]),
                   bool(data["feature_cache"]), {b: bool(c) for b, c in data["chainable"].items()}, probed)


def build_cost_model(backbones: Mapping[str, Backbone], data: PreparedData, feature_cache: bool = True) -> CostModel:
    """Count every backbone's blocks at every prepared resolution (one image each, in the driver, before Ray)."""
    split = next(iter(data.splits.values()))  # every resolution holds the same images
    blocks = {name: block_flops(b, sorted(data.splits)) for name, b in backbones.items()}
    return CostModel(blocks, {name: b.num_features for name, b in backbones.items()}, data.num_classes, len(split.train_y),
                     len(split.val_y), feature_cache and not data.streaming, {name: b.chainable for name, b in backbones.items()})


def with_probed_boundaries(model: CostModel, backbones: Mapping[str, Backbone], data: PreparedData,
                           probed: Iterable[tuple[str, int]]) -> CostModel:
    """``model`` knowing which boundaries the ``(backbone, resolution)`` probes' one pass kept (``training.forward_once``)."""
    kept: dict[str, dict[int, tuple[int, ...]]] = {}
    for name, resolution in probed if model.feature_cache else ():
        if name in backbones and resolution in data.splits:
            kept.setdefault(name, {})[resolution] = boundary_cuts(backbones[name], data.splits[resolution])
    return dataclasses.replace(model, probed_boundaries=kept)


def table_configs(trials: pd.DataFrame | None) -> dict[str, TrialConfig]:
    """trial_id -> config of each row of a ``trials`` table; a row whose config does not parse (it failed on it) is left out."""
    configs = {}
    for row in trials.to_dict("records") if trials is not None else []:
        try:
            configs[row["trial_id"]] = TrialConfig.from_row(row)
        except TuneTLError:
            continue
    return configs


def recorded_costs(model: CostModel, configs: Mapping[str, TrialConfig], epochs: pd.DataFrame) -> pd.DataFrame:
    """The ``epochs`` rows of trials in ``configs``, with each epoch's predicted ``epoch_cost`` and the trial's
    cumulative :data:`TRAINING_COST` after it (FLOPs): what cost-aware ASHA's clock read, rebuilt from the results."""
    rows = epochs[epochs["trial_id"].isin(list(configs))]
    pairs = list(zip(rows["trial_id"], rows["epoch"].astype(int), strict=True))
    return rows.assign(epoch_cost=[model.epoch_cost(configs[t], e) for t, e in pairs],
                       **{TRAINING_COST: [model.trial_cost(configs[t], e) for t, e in pairs]})


def seconds_per_flop(predicted: Sequence[float], measured: Sequence[float]) -> float | None:
    """Calibration for people: the median of measured / predicted over the epochs seen (``None`` before any).

    A median, so a few epochs slowed by a busy machine or a cache filled from disk do not move it. Only
    reports and logs use it; no decision does.
    """
    ratios = [m / p for p, m in zip(predicted, measured, strict=False) if p > 0 and m is not None and np.isfinite(m) and m > 0]
    return float(np.median(ratios)) if ratios else None


def recorded_cost_model(run: SearchRun) -> tuple[CostModel, float] | None:
    """The cost model and unit (FLOPs) the search's cost-aware ASHA decided with; ``None`` for a search on measured seconds."""
    state = scheduler_state(run)
    if not isinstance(state.get("cost_model"), dict) or not isinstance(state.get("unit"), (int, float)):
        return None
    return CostModel.from_dict(state["cost_model"]), float(state["unit"])


def cheapest_fine_tune(model: CostModel, sub_spaces: Mapping[str, tuple] | None, source: str) -> tuple[TrialConfig, float] | None:
    """The config of a space (its resolved ``sub_spaces``, the search plan's; ``None`` for a Python space) whose first
    fine-tune epoch (after its linear-probe epochs, if any) is predicted cheapest, and that cost in FLOPs; ``None``
    when the space trains no backbone block (or is a Python space).

    For each backbone and resolution the space allows, the fine-tuning freeze policies it lists are priced at their
    cheapest setting it allows (``prefix`` with the most frozen blocks short of all, ``surgical`` on the highest
    block, ``full``), with the space's fixed values and every other parameter's default (no augmentation)."""
    if sub_spaces is None:
        return None
    best = None
    for name, params in sub_spaces.items():
        if name not in model.blocks:
            continue
        dists, n = {p.name: p.dist for p in params}, model.num_blocks[name]
        fixed = {k: d.value for k, d in dists.items() if isinstance(d, Fixed)}
        sizes = resolutions_of(dists["resolution"], source) if "resolution" in dists else [PARAMS["resolution"].default]
        policies = values_of(dists["freeze_policy"]) if "freeze_policy" in dists else (PARAMS["freeze_policy"].default,)
        for policy in (p for p in policies if p != "head_only"):
            setting = {}
            if policy == "prefix":
                frozen = _largest_below(dists["freeze_blocks"], n) if "freeze_blocks" in dists else 0
                if frozen is None:
                    continue
                setting = {"freeze_blocks": frozen}
            elif policy == "surgical":
                setting = {"train_block": _largest_below(dists["train_block"], n)} if "train_block" in dists else {}
            for size in (s for s in sizes if s in model.blocks[name]):
                try:
                    cfg = TrialConfig.from_dict({**fixed, **setting, "backbone": name, "resolution": size, "freeze_policy": policy})
                    cost = model.trial_cost(cfg, (cfg.lp_epochs or 0) + 1)
                except (TuneTLError, ValueError):
                    continue
                if best is None or cost < best[1]:
                    best = (cfg, cost)
    return best


def _largest_below(dist, n: int) -> int | None:
    """The largest value below ``n`` that ``dist`` (a resolved block count or index) can take, or ``None``."""
    if isinstance(dist, Range):
        top = min(int(dist.high), n - 1)
        return top if top >= dist.low else None
    below = [int(v) for v in values_of(dist) if v < n]
    return max(below) if below else None
