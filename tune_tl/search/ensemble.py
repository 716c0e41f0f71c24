"""Ensemble selection over a search's probes and kept trials, on their val probabilities (Caruana et al. 2004).

Greedy forward selection with replacement, as AutoGluon's weighted ensemble: start from the best single member
(by val accuracy; ties go to the leaderboard's order), then repeatedly add the member, possibly one already in,
whose addition makes the average of the chosen members' probabilities most accurate on val (ties: lower log loss).
A member's weight is how many times it was added, over the total.

The guard against fitting val noise: **a step is taken only if it makes at least one more val image correct**.
On a few hundred val images one image is a fraction of a point, and a step that only moves log loss, or trades
one image for another, is choosing among noise; the plain Caruana loop takes such steps and can end below where
it started. With the guard the ensemble is the best single member until averaging really fixes images, and its
val accuracy can never be below the best single member's. Bagged selection (AutoGluon's other guard) averages
selections over bootstrap resamples of val: smoother weights, but its val accuracy is not monotone and it costs
a selection per bag; the one-image rule is simpler to state and to check. Its val accuracy is still a maximum
over choices made on val: only a test split (``search.held_out``) gives an honest figure.

    >>> ens = select_ensemble({"a": pa, "b": pb}, labels)     # doctest: +SKIP
    >>> ens.weights, ens.val_acc                               # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from tune_tl.search.val_predictions import read_val_predictions
from tune_tl.store.search_run import SearchRun

log = logging.getLogger(__name__)

#: At most this many additions (AutoGluon's default ensemble size is 25 too): the guard usually stops far sooner.
MAX_ROUNDS = 25
#: A step must make at least this many more val images correct (the guard above).
MIN_GAIN_IMAGES = 1


@dataclass(frozen=True)
class Ensemble:
    """A weighted average of members' probabilities, chosen on val."""

    #: trial_id -> weight (summing to 1), in the order they were first added.
    weights: dict[str, float]
    val_acc: float
    val_images: int
    #: The best single member and its val accuracy: the ensemble never scores below it on val.
    best_single: str
    best_single_val_acc: float

    def record(self) -> dict[str, Any]:
        """What ``search.json`` keeps (under ``ensemble``)."""
        return {"members": [{"trial_id": t, "weight": round(w, 6)} for t, w in self.weights.items()], "val_acc": self.val_acc,
                "val_images": self.val_images, "best_single": self.best_single, "best_single_val_acc": self.best_single_val_acc,
                "method": f"greedy forward selection with replacement (Caruana 2004), a step only if it adds >= {MIN_GAIN_IMAGES} "
                          f"correct val image"}

    def probabilities(self, probs: dict[str, np.ndarray]) -> np.ndarray:
        """The ensemble's prediction from its members' probabilities (on any images, in the same order)."""
        return sum(w * probs[t] for t, w in self.weights.items())


def select_ensemble(probs: dict[str, np.ndarray], labels: np.ndarray, max_rounds: int = MAX_ROUNDS,
                    min_gain: int = MIN_GAIN_IMAGES) -> Ensemble:
    """Greedy selection with replacement over ``probs`` (member -> ``(images, classes)``), guarded (module docstring).

    ``probs``' order breaks ties between equally accurate single members (pass them best-ranked first).
    """
    if not probs:
        raise ValueError("no members to choose from")
    labels = np.asarray(labels)
    ids = list(probs)
    correct = {t: int((probs[t].argmax(1) == labels).sum()) for t in ids}
    first = max(ids, key=lambda t: (correct[t], -ids.index(t)))
    chosen = [first]
    total, best = probs[first].astype(np.float64).copy(), correct[first]
    for _ in range(max_rounds - 1):
        scored = []
        for t in ids:
            avg = (total + probs[t]) / (len(chosen) + 1)
            scored.append((int((avg.argmax(1) == labels).sum()), -_log_loss(avg, labels), -ids.index(t), t))
        hits, _, _, pick = max(scored)
        if hits < best + min_gain:
            break
        chosen.append(pick)
        total += probs[pick]
        best = hits
    counts = Counter(chosen)
    weights = {t: counts[t] / len(chosen) for t in dict.fromkeys(chosen)}
    n = max(len(labels), 1)
    return Ensemble(weights, best / n, len(labels), first, correct[first] / n)


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def ensemble_search(run: SearchRun) -> Ensemble:
    """Select an ensemble from ``run``'s ``val_predictions/`` and record it in ``search.json`` (``ensemble``).

    Raises:
        TuneTLError: The search kept no val predictions.
    """
    kept = read_val_predictions(run)
    ensemble = select_ensemble(kept.probs, kept.labels)
    run.update_metadata(ensemble=ensemble.record())
    log.info("ensemble of %d member(s): val_acc %.4f (best single %s: %.4f)", len(ensemble.weights), ensemble.val_acc,
             ensemble.best_single, ensemble.best_single_val_acc)
    return ensemble
