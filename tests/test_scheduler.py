"""A resumed search prunes exactly as strictly as an uninterrupted one: ASHA rungs are replayed."""

from types import SimpleNamespace

import numpy as np

from tune_tl.analysis.frame import load_results
from tune_tl.search.schedulers import ReplayASHA
from tune_tl.store.results import ParquetSink

ASHA = dict(time_attr="epoch", metric="val_acc", mode="max", max_t=9, grace_period=1, reduction_factor=3)


def result(epoch, acc):
    return {"epoch": epoch, "train_loss": 1.0, "val_loss": 1.0, "val_acc": acc, "lr": 0.1,
            "epoch_seconds": 0.01, "trainable_params": 10, "diverged": False}


def drive(asha, sink, trial, accs):
    """Feed one trial's results as Ray does; returns the epochs it ran before ASHA stopped it."""
    asha.on_trial_add(None, trial)
    sink.on_trial_start(0, [], trial)
    for epoch, acc in enumerate(accs, start=1):
        r = result(epoch, acc)
        sink.on_trial_result(0, [], trial, r)
        if asha.on_trial_result(None, trial, r) == "STOP" or epoch == len(accs):
            asha.on_trial_complete(None, trial, r)
            sink.on_trial_complete(0, [], trial)
            return epoch


def rungs(asha):
    return [(m, dict(rec)) for m, rec in asha._brackets[0]._rungs]


def test_replayed_rungs_equal_the_live_rungs_and_prune_the_same_trials(tmp_path):
    rng = np.random.default_rng(0)
    curves = [np.sort(rng.uniform(0, 1, 9)) for _ in range(12)]
    live = ReplayASHA(tmp_path, **ASHA)
    sink = ParquetSink(tmp_path, max_epochs=9, flush_seconds=1e9)
    sink.setup()
    for i, curve in enumerate(curves[:8]):
        drive(live, sink, SimpleNamespace(trial_id=f"t{i}", config={}, error_file=None), curve)
    sink.flush()
    assert sum(len(rec) for _, rec in rungs(live)) > 0

    restored = ReplayASHA(tmp_path, **ASHA)  # as Ray unpickles it on restore: empty rungs
    assert all(not rec for _, rec in rungs(restored))
    restored.on_trial_add(None, SimpleNamespace(trial_id="t8"))  # first contact triggers the replay
    assert rungs(restored) == rungs(live)

    # And the next trials meet the same cutoffs in both.
    live.on_trial_add(None, SimpleNamespace(trial_id="t8"))
    for i, curve in enumerate(curves[8:], start=8):
        t = SimpleNamespace(trial_id=f"t{i}")
        if i > 8:
            live.on_trial_add(None, t)
            restored.on_trial_add(None, t)
        for epoch, acc in enumerate(curve, start=1):
            a = live.on_trial_result(None, t, result(epoch, acc))
            b = restored.on_trial_result(None, t, result(epoch, acc))
            assert a == b
            if a == "STOP":
                break
    assert rungs(restored) == rungs(live)


def test_plain_asha_after_restore_would_have_empty_rungs_and_prune_less(tmp_path):
    # The reason ReplayASHA exists: without replay a restored scheduler lets a weak trial pass.
    live = ReplayASHA(tmp_path, **ASHA)
    sink = ParquetSink(tmp_path, max_epochs=9, flush_seconds=1e9)
    sink.setup()
    for i in range(4):
        drive(live, sink, SimpleNamespace(trial_id=f"t{i}", config={}, error_file=None), [0.9] * 9)
    sink.flush()
    weak = SimpleNamespace(trial_id="weak")
    restored = ReplayASHA(tmp_path, **ASHA)
    restored.on_trial_add(None, weak)
    assert restored.on_trial_result(None, weak, result(1, 0.1)) == "STOP"
    unreplayed = ReplayASHA(tmp_path / "elsewhere", **ASHA)
    unreplayed.on_trial_add(None, weak)
    assert unreplayed.on_trial_result(None, weak, result(1, 0.1)) == "CONTINUE"
    assert len(load_results(tmp_path).epochs) == 36
