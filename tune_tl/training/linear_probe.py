"""The cheapest strong answer: a convex linear head on a frozen backbone's pooled features.

For a few hundred to a few thousand labelled photos, L2-regularised multinomial logistic regression on the
pooled features of the right backbone at its native resolution matches much longer searches, in seconds.
scikit-learn fits it (standardised features, the regularisation ``C`` chosen by stratified cross-validation on
the train split, scored by log loss); the standardisation is then folded into the weights, so the result is an
ordinary ``nn.Linear`` on the raw features: the head of a ``TransferModel`` that ``export`` writes, ``predict``
runs, and a fine-tune can start from.

    >>> probe = fit_linear_probe(train_features, train_labels, num_classes=10, seed=0)
    >>> probe.accuracy(val_features, val_labels), probe.C
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from torch import nn

from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import FileSplit, Split
from tune_tl.models import Backbone
from tune_tl.models.transferability import logme
from tune_tl.training.forward_once import forward_once

#: Regularisation strengths tried (``C`` = 1 / L2 weight on standardised features). On the photo folders and
#: digits measured (docs/benchmarks.md) the chosen C was 0.1 or 1; a grid to 10 and 5 folds cost 6x the time
#: (291 s instead of 45 s for digits' 1,437 images on a loaded 2-core machine) for the same val accuracy.
CS = (1e-3, 1e-2, 1e-1, 1.0)
#: The start head's strength (``fit_start_head``), fitted once without cross-validation. On one scale for all features,
#: cross-validating 0.01 and 0.1 chose 0.01 for 9 and 0.1 for 3 of the 12 backbone-set pairs measured; the head is
#: scaled to a fresh head's norm before a fine-tune (``training.recipe.build_model``), so only its direction counts, and
#: one fit took 0.4-2.2 s where cross-validating (0.01, 0.1) took 1.7-8.0 s (docs/benchmarks.md).
START_C = 1e-2
#: Cross-validation folds on the train split (fewer when a class has fewer images).
FOLDS = 3


@dataclass(frozen=True)
class LinearProbe:
    """A fitted convex head: ``logits = features @ weight.T + bias`` (standardisation folded in)."""

    weight: np.ndarray  # (classes, features), float32
    bias: np.ndarray  # (classes,), float32
    C: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features.astype(np.float32) @ self.weight.T + self.bias

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        return float((self.logits(features).argmax(1) == labels).mean()) if len(labels) else float("nan")

    def log_loss(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Mean cross-entropy, as the training loop reports ``train_loss``/``val_loss``."""
        logits = torch.from_numpy(self.logits(features))
        return float(nn.functional.cross_entropy(logits, torch.from_numpy(np.asarray(labels, dtype=np.int64))))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) as tensors: how ``probe_heads.pt`` and a trial's context hold a head."""
        return torch.from_numpy(self.weight), torch.from_numpy(self.bias)

    def as_linear(self) -> nn.Linear:
        """The probe as the ``nn.Linear`` head of a ``TransferModel``."""
        head = nn.Linear(self.weight.shape[1], self.weight.shape[0])
        weight, bias = self.tensors()
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
        return head


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int) -> LinearProbe:
    """Standardise, pick ``C`` by stratified cross-validation (log loss), refit on all of ``features``, fold back.

    ``num_classes`` is the search's class count: a class absent from the train split gets a row that never wins.
    """
    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    scale = x.std(0)
    scale[scale == 0] = 1.0  # a constant feature carries nothing; keep it from dividing by zero
    folds = max(2, min(FOLDS, int(np.unique(y, return_counts=True)[1].min())))
    model = LogisticRegressionCV(Cs=list(CS), cv=StratifiedKFold(folds, shuffle=True, random_state=seed), l1_ratios=(0.0,),
                                 scoring="neg_log_loss", max_iter=300, tol=1e-3, use_legacy_attributes=False)
    return _fit(model, x, y, num_classes, scale)


def fit_start_head(features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int) -> LinearProbe:
    """The linear head a fine-tune starts from (``head_init: probe``): one logistic regression at :data:`START_C` with
    one scale for every feature.

    The probe standardises each feature, so a near-constant one weighs as much as any after scaling and, folded back
    to raw features, gets a huge weight (Lite0 on the blood cells: weight norm 5,457 against 10 here). A fine-tune moves
    such features by far more than their spread, and the scaled-down head it had to start from (``build_model``)
    pointed along them: its first epochs scored 53-88 % against the probe's 85.8 % (docs/benchmarks.md, "The head a
    fine-tune starts from"). One scale for all keeps the weights where the features vary; as a probe it scores within
    a few points of the standardised one either way (12 backbone-set pairs), so the probe itself stays as it is.
    """
    x = np.asarray(features, dtype=np.float64)
    model = LogisticRegression(C=START_C, max_iter=300, tol=1e-3, random_state=seed)
    return _fit(model, x, np.asarray(labels), num_classes, float(x.std(0).mean()) or 1.0)


def _fit(model: LogisticRegression | LogisticRegressionCV, x: np.ndarray, y: np.ndarray, num_classes: int,
         scale: np.ndarray | float) -> LinearProbe:
    """Fit ``model`` on ``x`` centred and divided by ``scale``, then fold both back into the weights."""
    mean = x.mean(0)
    with warnings.catch_warnings():  # an unconverged fold still ranks the Cs, an unconverged start head still starts
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit((x - mean) / scale, y)
    coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1:  # binary: sklearn keeps one logit (class 1 vs 0); split it evenly into two
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.zeros((num_classes, x.shape[1]))
    bias = np.full(num_classes, -1e4)
    weight[model.classes_], bias[model.classes_] = coef / scale, intercept - (coef / scale) @ mean
    chosen = model.C_ if isinstance(model, LogisticRegressionCV) else model.C
    return LinearProbe(weight.astype(np.float32), bias.astype(np.float32), float(np.atleast_1d(chosen)[0]))


@dataclass(frozen=True)
class ProbeMeasurement:
    """One backbone on one split at one resolution: its transferability score, its fitted probe and, when asked for,
    the head a fine-tune starts from (:func:`fit_start_head`)."""

    logme: float
    probe: LinearProbe
    val_acc: float
    train_loss: float
    val_loss: float
    seconds: float  # feature extraction (or the cache read) plus the fits
    start: LinearProbe | None = None


def measure_probe(backbone: Backbone, split: Split | FileSplit, num_classes: int, seed: int, cache: str | None = None,
                  device: str | None = None, batch_size: int = 128, start_head: bool = False) -> ProbeMeasurement:
    """Pooled features of ``backbone`` on ``split`` (once, through the feature cache when ``cache`` is given, which
    also keeps the activations fine-tunes start from: ``training.forward_once``), LogME on the train features,
    and a linear probe fitted on them and scored on the val features; with ``start_head``, also the head fine-tunes
    of this backbone start from (a search's stage 0)."""
    start = time.perf_counter()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    backbone.features.to(device)
    features = forward_once(backbone, split, Normaliser(backbone.mean, backbone.std, device), batch_size, cache)
    train, val = features["train"], features["val"]
    probe = fit_linear_probe(train, split.train_y, num_classes, seed)
    head = fit_start_head(train, split.train_y, num_classes, seed) if start_head else None
    return ProbeMeasurement(logme(train, split.train_y), probe, probe.accuracy(val, split.val_y), probe.log_loss(train, split.train_y),
                            probe.log_loss(val, split.val_y), time.perf_counter() - start, head)
