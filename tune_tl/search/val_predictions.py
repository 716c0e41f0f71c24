"""What an ensemble needs, kept when a search ends: each candidate's class probabilities on val at its best epoch.

``<search>/val_predictions/`` is a Parquet table (``SearchRun.val_predictions_dir``) with one row per candidate
and validation image:

==========  ================  =====================================================================
column      type              meaning
==========  ================  =====================================================================
trial_id    string            a probe (``probe-<backbone>-<resolution>``) or a kept fine-tuned trial
row         int32             the image's index in the validation split, in order
label       int32             its true class (an index into ``search.json``'s ``classes``)
probs       list<float32>     softmax of the member's logits, one value per class
==========  ================  =====================================================================

Candidates are every stage-0 probe and every trial whose best-epoch checkpoint retention kept (the top
``keep_checkpoints``, ``search.retention``). A probe's probabilities come from its head (``probe_heads.pt``) on the
pooled val features in the feature cache (computed again only when the cache is off); a trial's are the ones its
best epoch measured its ``val_acc`` with, saved in that epoch's checkpoint (``store.search_run.VAL_PROBS``: a few
kilobytes beside megabytes of weights and optimizer state), so the weights they describe are exactly the ones
``export`` writes. A checkpoint without them (written before 2026-12-07) gets one forward pass over val. Before,
every kept trial got that pass when the search ended, out of the time budget: with it the ends of four 600 s photo
searches took 19 to 81 s; without it (and with the end priced as test passes only, ``search.finish``) 9 to 62 s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from tune_tl.config.params import TrialConfig
from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import FileSplit, Split
from tune_tl.errors import TuneTLError
from tune_tl.models import Backbone, build_backbone
from tune_tl.models.folding import folded
from tune_tl.store.ranking import ranked
from tune_tl.store.results import write_table_atomic
from tune_tl.store.schema import read_table
from tune_tl.store.search_run import VAL_PROBS, SearchRun
from tune_tl.training.batches import batches, in_order, to_device
from tune_tl.training.feature_cache import FeatureCache
from tune_tl.training.frozen_features import encode, pooled_key
from tune_tl.training.recipe import build_network

log = logging.getLogger(__name__)

SCHEMA = pa.schema([("trial_id", pa.string()), ("row", pa.int32()), ("label", pa.int32()), ("probs", pa.list_(pa.float32()))])
#: The probes' feature batch size (``search.probes`` via ``measure_probe``): the same batches, the same features.
_PROBE_BATCH = 128


@dataclass(frozen=True)
class ValPredictions:
    """Val labels and each candidate's ``(images, classes)`` probabilities, best candidate first."""

    labels: np.ndarray
    probs: dict[str, np.ndarray]


def device_for(device: str | None = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@torch.no_grad()
def class_probabilities(model: nn.Module, split: Split | FileSplit, part: str, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Softmax of ``model`` (a ``TransferModel``) on ``split``'s ``part`` (``val`` or ``test``), in order, never augmented.
    Runs a copy with batch norm folded (``models.folding``: on the CPU about 1.45x faster; used only if its outputs on
    the first batch are the unfolded model's)."""
    model.to(device).eval()
    normalise = Normaliser(model.backbone.mean, model.backbone.std, device)
    fast, out = None, []
    for images, labels in batches(split, part, in_order(len(getattr(split, f"{part}_y")), batch_size)):
        x, _ = to_device(images, labels, normalise)
        if fast is None:
            fast = folded(model, x[:2])
        out.append(torch.softmax(fast(x).float(), 1).cpu())
    return torch.cat(out).numpy()


def state_model(run: SearchRun, row: dict, state: dict) -> nn.Module:
    """Trial ``row``'s network with the weights of its training ``state`` (its kept best epoch's), as ``export`` builds it."""
    cfg = TrialConfig.from_row(row)
    model = build_network(cfg, build_backbone(cfg.backbone or run.spec.backbone.names[0], "none"), len(run.classes))
    model.load_state_dict(state["model"])
    return model


def record_val_predictions(run: SearchRun, splits: dict, backbones: dict[str, Backbone], cache: str | None,
                           device: str | None = None) -> ValPredictions:
    """Compute every candidate's val probabilities (module docstring), write the table, and return them.

    ``splits`` are the search's prepared splits by resolution; ``backbones`` the built ones its probes measured.
    """
    dev, heads = device_for(device), run.probe_heads()
    probs: dict[str, np.ndarray] = {}
    labels = None
    for row in ranked(run.trials()).to_dict("records"):
        split = splits.get(int(row["resolution"]))
        if split is None:
            continue
        p = member_probabilities(run, row, split, "val", backbones, cache, dev, heads)
        if p is not None:
            probs[row["trial_id"]] = p
        labels = np.asarray(split.val_y, dtype=np.int64)
    if labels is None:
        return ValPredictions(np.zeros(0, dtype=np.int64), {})
    write_val_predictions(run, ValPredictions(labels, probs))
    log.info("val predictions of %d ensemble candidate(s) kept in %s", len(probs), run.val_predictions_dir)
    return ValPredictions(labels, probs)


def member_probabilities(run: SearchRun, row: dict, split: Split | FileSplit, part: str, backbones: dict[str, Backbone],
                         cache: str | None, device: torch.device, heads: dict | None = None) -> np.ndarray | None:
    """A probe's or a kept trial's class probabilities on ``split``'s ``part`` (``val`` or ``test``), in order; ``None``
    when it cannot be scored (a probe without its head or backbone here, a trial whose weights retention deleted)."""
    cfg = TrialConfig.from_row(row)
    name = cfg.backbone or run.spec.backbone.names[0]
    if row.get("probe") is True or row.get("probe") == 1:
        head = (run.probe_heads() if heads is None else heads).get((name, cfg.resolution))
        backbone = backbones.get(name)
        if head is None or backbone is None:
            return None
        features = _probe_features(backbone, split, part, cache, device)
        weight, bias = (t.float().numpy() for t in head)
        return torch.softmax(torch.from_numpy(features @ weight.T + bias), 1).numpy()
    try:
        state = run.best_checkpoint(str(row["trial_id"]))
    except TuneTLError:
        return None  # not among the kept checkpoints: not a candidate
    saved = state.get(VAL_PROBS) if part == "val" else None
    if saved is not None and saved.shape[0] == len(split.val_y):
        return saved.numpy()
    return class_probabilities(state_model(run, row, state), split, part, device)


def _probe_features(backbone: Backbone, split, part: str, cache: str | None, device: torch.device) -> np.ndarray:
    """The pooled features of ``part`` the probe is scored on: from the cache entry its probe filled, else computed for
    ``part`` alone (a probe fitted on a subset of train, under a short budget, left no entry: train is not needed), in
    float32 as the exported model computes them (``tune-tl predict``), whatever dtype the probe's own pass used."""
    backbone.features.to(device)
    normalise = Normaliser(backbone.mean, backbone.std, device)
    if cache is not None and part in ("train", "val"):  # what a cache entry holds: test is never cached
        key = pooled_key(backbone.name, backbone.features, split, normalise)
        kept = FeatureCache(cache).get(key, {"train": len(split.train_y), "val": len(split.val_y)})
        if kept is not None and part in kept:
            return kept[part].astype(np.float32)
    return encode(backbone.features, split, part, normalise, _PROBE_BATCH, dtype=torch.float32).astype(np.float32)


def write_val_predictions(run: SearchRun, predictions: ValPredictions) -> None:
    """Replace ``<search>/val_predictions/`` with ``predictions`` (one Parquet part)."""
    directory = run.val_predictions_dir
    if directory.is_dir():
        directory.delete_tree()
    n = len(predictions.labels)
    columns = {"trial_id": [], "row": [], "label": [], "probs": []}
    for trial_id, p in predictions.probs.items():
        columns["trial_id"] += [trial_id] * n
        columns["row"] += list(range(n))
        columns["label"] += predictions.labels.tolist()
        columns["probs"] += p.astype(np.float32).tolist()
    write_table_atomic(pa.table(columns, schema=SCHEMA), SCHEMA, directory, name="part-0.parquet")


def read_val_predictions(run: SearchRun) -> ValPredictions:
    """The table back as arrays, candidates in the table's order.

    Raises:
        TuneTLError: The search has no ``val_predictions/`` (it ended before this version, or with no ranked trial).
    """
    directory = run.val_predictions_dir
    frame = read_table(directory, SCHEMA, ["trial_id", "row"])
    if frame.empty:
        raise TuneTLError(f"{run.root}: no {directory.name}/ (the search ended before val predictions were kept, or with no "
                          f"finished trial); run a new search")
    ids = list(dict.fromkeys(frame["trial_id"]))
    first = frame[frame["trial_id"] == ids[0]].sort_values("row")
    probs = {i: np.stack(frame[frame["trial_id"] == i].sort_values("row")["probs"].to_numpy()).astype(np.float32) for i in ids}
    return ValPredictions(first["label"].to_numpy(dtype=np.int64), probs)
