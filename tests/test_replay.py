"""The replay simulator on tiny synthetic curves: real Ray scheduler objects, simulated seconds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from tune_tl.bench.curves import make_textures, read_curves, write_curves
from tune_tl.bench.replay import SCHEDULERS, Task, best_by_workers, main, markdown, replay, summarize
from tune_tl.bench.replay_samplers import TEXTBOOK, RandomOrder, TextbookFirst, TPEReplay
from tune_tl.bench.sim import Curve, curves_from_table, simulate
from tune_tl.errors import TuneTLError


def curve(name: str, accs, seconds=10.0, **params) -> Curve:
    accs = np.asarray(accs, dtype=float)
    return Curve(name, params or {"lr": 1e-3}, accs, np.full(len(accs), float(seconds)))


class InOrder:
    """A sampler that proposes the given curves in this order."""

    def __init__(self, curves):
        self.queue = list(curves)
        self.observed = []

    def propose(self):
        return self.queue.pop(0) if self.queue else None

    def observe(self, c, epochs, completed):
        self.observed.append((c.trial_id, epochs, completed))


def asha(max_t=4, rf=2):
    return ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=max_t, grace_period=1, reduction_factor=rf)


def test_fifo_runs_every_trial_to_its_last_epoch():
    curves = [curve("a", [0.1, 0.2, 0.3, 0.4]), curve("b", [0.5, 0.6, 0.7, 0.8]), curve("c", [0.2, 0.2, 0.2, 0.2])]
    sampler = InOrder(curves)
    trace = simulate(curves, FIFOScheduler(), sampler, workers=1, budget=1e9)
    assert (trace.started, trace.epochs, trace.stopped) == (3, 12, 0)
    assert sampler.observed == [("a", 4, True), ("b", 4, True), ("c", 4, True)]
    assert trace.end == pytest.approx(120.0)
    assert trace.best[-1] == pytest.approx(0.8)


def test_asha_with_reduction_factor_2_stops_the_worse_of_two_trials_at_the_first_rung():
    good, bad = curve("good", [0.9, 0.9, 0.9, 0.9]), curve("bad", [0.2, 0.95, 0.95, 0.95])
    sampler = InOrder([good, bad])
    trace = simulate([good, bad], asha(max_t=4, rf=2), sampler, workers=1, budget=1e9)
    assert sampler.observed == [("good", 4, True), ("bad", 1, False)]
    assert trace.stopped == 1 and trace.epochs == 5
    assert trace.best[-1] == pytest.approx(0.9)  # the late bloomer's 0.95 was never seen


def test_a_stopped_trial_frees_its_worker_at_the_time_of_its_last_result():
    good, bad, third = curve("good", [0.9] * 4), curve("bad", [0.1] * 4), curve("third", [0.05] * 4)
    sampler = InOrder([good, bad, third])
    trace = simulate([good, bad, third], asha(max_t=4, rf=2), sampler, workers=1, budget=1e9)
    # good: 0-40 s; bad stopped after its first epoch at 50 s; third starts at 50 s, stopped at 60 s
    assert trace.end == pytest.approx(60.0)
    assert [o[1] for o in sampler.observed] == [4, 1, 1]


@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_w_workers_finish_in_one_wth_of_the_sequential_simulated_time(workers):
    curves = [curve(f"t{i}", [0.5, 0.6], seconds=5.0) for i in range(8)]
    trace = simulate(curves, FIFOScheduler(), InOrder(curves), workers=workers, budget=1e9)
    assert trace.epochs == 16
    assert trace.end == pytest.approx(80.0 / workers)


def test_the_budget_cuts_the_search_and_nothing_after_it_counts():
    curves = [curve("slow", [0.3, 0.4, 0.5, 0.99])]
    trace = simulate(curves, FIFOScheduler(), InOrder(curves), workers=1, budget=35.0)
    assert trace.epochs == 3 and trace.best[-1] == pytest.approx(0.5)
    assert list(trace.best_at([0.0, 9.9, 10.0, 35.0])) == pytest.approx([0.0, 0.0, 0.3, 0.5])


def test_cost_aware_asha_compares_trials_after_equal_seconds_not_equal_epochs():
    # A full fine-tune (10 s epochs) runs first; a cheap slow starter (1 s epochs) follows.
    full = curve("full", [0.9] * 6, seconds=10.0, freeze_policy="full")
    cheap = curve("cheap", [0.2, 0.4, 0.6, 0.8, 0.9, 0.95], seconds=1.0, freeze_policy="head_only")
    task = Task("t", (full, cheap))
    by_epoch = simulate([full, cheap], asha(max_t=6, rf=2), InOrder([full, cheap]), workers=1, budget=1e9)
    by_seconds = simulate([full, cheap], SCHEDULERS["asha-seconds"](task), InOrder([full, cheap]), workers=1, budget=1e9)
    assert by_epoch.best[-1] == pytest.approx(0.9) and by_epoch.stopped == 1  # cut after its 1 s epoch
    assert by_seconds.best[-1] == pytest.approx(0.95) and by_seconds.stopped == 0


def test_every_registered_scheduler_and_sampler_finds_a_dominant_config_and_the_table_says_so():
    rng = np.random.default_rng(0)
    curves = [curve(f"t{i}", np.sort(rng.uniform(0.3, 0.8, 4)), seconds=rng.uniform(2, 8),
                    lr=float(10 ** rng.uniform(-4, -2)), freeze_policy=["full", "prefix", "head_only"][i % 3]) for i in range(9)]
    curves.append(curve("star", [0.9, 0.95, 0.97, 0.99], seconds=5.0, lr=1e-3, freeze_policy="full"))
    task = Task("synthetic", tuple(curves))
    runs = replay(task, list(SCHEDULERS), ["random", "tpe", "textbook"], [1, 2, 64], seeds=3)
    summary = summarize(runs)
    assert len(runs) == len(SCHEDULERS) * 3 * 3 * 3
    assert (summary["100%"] >= 0.9).all()  # every scheduler found the star (the others stay below 0.8) ...
    plain = summary[summary["scheduler"].isin(["fifo", "asha", "asha-seconds", "median"])]
    assert np.allclose(plain["100%"], 0.99)  # ... and these train a survivor to its last epoch (PASHA may not)
    assert (summary["25%"] <= summary["50%"]).all() and (summary["50%"] <= summary["100%"]).all()
    assert set(best_by_workers(summary)) == {1, 2, 64}
    text = markdown(task, summary, seeds=3)
    assert "| 64 |" in text and "| 0.9900 |" in text and "best recorded val_acc 0.9900" in text


def test_samplers_propose_each_recorded_config_once_then_run_dry():
    curves = [curve(f"t{i}", [0.1 * i], lr=10 ** (-4 + i / 3), freeze_policy=["full", "prefix"][i % 2]) for i in range(7)]
    for sampler in (RandomOrder(curves, 1), TPEReplay(curves, 1, n_startup_trials=2), TextbookFirst(curves, 1)):
        seen = []
        while (c := sampler.propose()) is not None:
            seen.append(c.trial_id)
            sampler.observe(c, 1, True)
        assert sorted(seen) == sorted(c.trial_id for c in curves)


def test_textbook_first_starts_with_the_configs_nearest_to_the_textbook_recipes():
    curves = [curve("probe", [0.5], freeze_policy="head_only", optimizer="sgd", lr=1e-2, lp_epochs=0),
              curve("ft", [0.5], freeze_policy="full", optimizer="adamw", lr=1.2e-3, lp_epochs=0),
              curve("lpft", [0.5], freeze_policy="full", optimizer="adamw", lr=8e-4, lp_epochs=1),
              curve("other", [0.5], freeze_policy="prefix", optimizer="sgd", lr=3e-2, lp_epochs=0)]
    sampler = TextbookFirst(curves, seed=0)
    assert [sampler.propose().trial_id for _ in TEXTBOOK] == ["ft", "probe", "lpft"]


def test_a_curve_table_round_trips_through_parquet_into_curves(tmp_path):
    table = pd.DataFrame({"trial_id": ["t000", "t000", "t001"], "epoch": [1, 2, 1], "val_acc": [0.5, 0.6, 0.7],
                          "epoch_seconds": [3.0, 3.0, 1.0], "phase": ["finetune"] * 3, "cached_features": [False, False, True],
                          "freeze_policy": ["full", "full", "head_only"], "train_block": [np.nan, np.nan, 3.0]})
    write_curves(table, tmp_path / "c.parquet", {"task": "demo"})
    back, meta = read_curves(tmp_path / "c.parquet")
    assert meta["task"] == "demo"
    curves = curves_from_table(back)
    assert [c.trial_id for c in curves] == ["t000", "t001"]
    assert curves[0].cost == pytest.approx(6.0) and "train_block" not in curves[0].params
    assert curves[1].params["train_block"] == 3.0


def test_bad_replay_input_exits_2_with_one_line_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--curves", str(tmp_path / "missing.parquet")])
    assert exc.value.code == 2 and "missing.parquet" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--schedulers", "nope"])
    assert exc.value.code == 2 and "--schedulers" in capsys.readouterr().err
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(TuneTLError, match="junk.parquet"):
        read_curves(tmp_path / "junk.parquet")


def test_the_texture_task_is_the_same_images_for_the_same_seed(tmp_path):
    a = make_textures(tmp_path / "a", per_class=2, size=32, seed=3)
    b = make_textures(tmp_path / "b", per_class=2, size=32, seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 12 and len({f.parent for f in files}) == 6
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_recording_overrides_fix_the_budget_and_one_resolution_and_reject_bad_values(tmp_path):
    from tune_tl.bench.curves import with_overrides
    from tune_tl.config import load_space

    spec = with_overrides(load_space(), configs=3, max_epochs=2, resolution=48, data=None)
    assert (spec.budget.samples, spec.budget.max_epochs, spec.resolutions()) == (3, 2, [48])
    assert [p.name for p in spec.params].count("resolution") == 1
    with pytest.raises(TuneTLError, match="--resolution"):
        with_overrides(load_space(), 3, 2, 4, None)
    with pytest.raises(TuneTLError, match="--configs"):
        with_overrides(load_space(), 0, 2, None, None)
    with pytest.raises(TuneTLError, match="--data"):
        with_overrides(load_space(), 3, 2, None, str(tmp_path / "nowhere"))
