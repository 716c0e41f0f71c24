"""A linear probe as a user writes it: frozen-backbone features, then scikit-learn's ``LogisticRegressionCV``.

The photos benchmark's row (a), and deliberately independent of the search's own probe stage: pooled
features of the backbone in eval mode (no augmentation) at its native resolution for train and val,
standardised, then an L2 multinomial logistic regression whose C is chosen by stratified
cross-validation on the train split only; val is scored once. The data (same decode, resize and split
as every other row) and the weights come from tune_tl.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tune_tl.config import DataSpec
from tune_tl.data import load_data
from tune_tl.data.preprocess import normalise
from tune_tl.models import build_backbone
from tune_tl.models.backbones import native_size

#: Folds of the cross-validation that picks C (fewer when a class has fewer train images).
FOLDS = 5


@dataclass(frozen=True)
class ProbeResult:
    backbone: str
    resolution: int
    val_acc: float
    #: Data loading, feature extraction and the fit, with every CPU thread.
    wall: float
    feature_seconds: float
    C: float
    folds: int


def features(net: torch.nn.Module, images: np.ndarray, mean, std, batch: int = 64) -> np.ndarray:
    """Pooled features of uint8 ``(N, 3, R, R)`` images, in eval mode and without gradients."""
    net.eval()
    with torch.no_grad():
        return np.concatenate([net(normalise(torch.from_numpy(np.array(images[i:i + batch])), mean, std)).numpy()
                               for i in range(0, len(images), batch)])


def linear_probe(data: DataSpec, backbone: str, seed: int = 0) -> ProbeResult:
    """Probe ``backbone`` at its native resolution on ``data``'s train/val split."""
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.time()
    size = native_size(backbone)
    split = load_data(data, [size], seed).data.splits[size]
    net = build_backbone(backbone, "imagenet")
    feature_start = time.time()
    train_f = features(net.features, split.train_x, net.mean, net.std)
    val_f = features(net.features, split.val_x, net.mean, net.std)
    feature_seconds = time.time() - feature_start
    folds = int(min(FOLDS, np.bincount(split.train_y).min()))
    # l1_ratios=(0,): the L2 penalty; C by accuracy, the metric every row reports.
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=folds, l1_ratios=(0.0,), scoring="accuracy",
                                                               use_legacy_attributes=False, max_iter=2000))
    clf.fit(train_f, split.train_y)
    acc = float(clf.score(val_f, split.val_y))
    return ProbeResult(backbone, size, acc, time.time() - start, feature_seconds, float(clf[-1].C_), folds)
