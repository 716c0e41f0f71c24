"""Ensemble selection (Caruana 2004, greedy with replacement) with its one-image guard."""

import numpy as np
import pytest

from tune_tl.search.ensemble import select_ensemble

#: Six val images of three classes.
LABELS = np.array([0, 1, 2, 0, 1, 2])


def _member(right: list[int], seed: int = 0) -> np.ndarray:
    """Probabilities that are confidently right on the images in ``right`` and mildly wrong on the others."""
    probs = np.full((len(LABELS), 3), 0.05, dtype=np.float32)
    for i, y in enumerate(LABELS):
        if i in right:
            probs[i, y] = 0.9
        else:
            probs[i, (y + 1) % 3], probs[i, y] = 0.5, 0.45
    return probs / probs.sum(1, keepdims=True)


def test_selection_picks_complementary_members_and_beats_the_best_single_one():
    # a misses images 4 and 5, b misses 0 and 1: each is 4/6, their average gets all six right.
    a, b = _member([0, 1, 2, 3]), _member([2, 3, 4, 5])
    ens = select_ensemble({"a": a, "b": b}, LABELS)
    assert ens.best_single == "a" and ens.best_single_val_acc == pytest.approx(4 / 6)
    assert set(ens.weights) == {"a", "b"} and sum(ens.weights.values()) == pytest.approx(1.0)
    assert ens.val_acc == 1.0
    assert (ens.probabilities({"a": a, "b": b}).argmax(1) == LABELS).mean() == ens.val_acc


def test_the_guard_stops_a_member_that_adds_no_correct_val_image():
    a = _member([0, 1, 2, 3])
    copy_of_a = a.copy()
    worse = _member([0, 1, 2])  # right only where a is already right
    ens = select_ensemble({"a": a, "copy": copy_of_a, "worse": worse}, LABELS)
    assert ens.weights == {"a": 1.0}
    assert ens.val_acc == ens.best_single_val_acc == pytest.approx(4 / 6)


def test_without_the_guard_a_member_that_only_lowers_log_loss_would_be_added():
    # sharper is right on the same four images, only more confident: it fixes no image, so the guard keeps it out.
    a = _member([0, 1, 2, 3])
    sharper = a.copy()
    sharper[[0, 1, 2, 3]] = np.eye(3, dtype=np.float32)[LABELS[[0, 1, 2, 3]]] * 0.98 + 0.01
    members = {"a": a, "sharper": sharper}
    assert "sharper" in select_ensemble(members, LABELS, min_gain=0, max_rounds=3).weights
    assert select_ensemble(members, LABELS).weights == {"a": 1.0}


@pytest.mark.parametrize("seed", range(20))
def test_the_ensemble_is_never_less_accurate_on_val_than_its_best_single_member(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=60)
    members = {f"m{i}": rng.dirichlet(np.ones(4), size=60).astype(np.float32) for i in range(5)}
    best = max((p.argmax(1) == labels).mean() for p in members.values())
    ens = select_ensemble(members, labels)
    assert ens.val_acc >= best
    assert ens.best_single_val_acc == best
    assert (ens.probabilities(members).argmax(1) == labels).mean() == pytest.approx(ens.val_acc)


def test_ties_between_single_members_go_to_the_first_listed():
    a = _member([0, 1, 2, 3])
    ens = select_ensemble({"second": a.copy(), "first": a}, LABELS)
    assert ens.best_single == "second"


def test_no_members_is_an_error():
    with pytest.raises(ValueError):
        select_ensemble({}, LABELS)
