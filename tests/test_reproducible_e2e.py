"""A seeded search is reproducible: the same trials, decisions and accuracies twice; and its cost predictions hold.

Cost-aware ASHA decides on predicted cost and the sampler weighs predicted cost, so nothing measured enters a
decision; torch on CPU with a fixed thread count trains the same config to the same weights. Two runs of one
seeded search (one trial at a time) must therefore agree on everything but timings, ids and nodes.
"""

import pandas as pd
import pytest

from tune_tl.cli import main
from tune_tl.store.search_run import SearchRun
from tune_tl.training.cost_model import recorded_cost_model, recorded_costs, seconds_per_flop, table_configs

#: Columns that say when, where and under which id a trial ran, not what it did.
RUN_COLUMNS = ["trial_id", "wall_seconds", "time", "epoch_seconds", "node_id", "node_ip"]
ARGS = ["default", "--samples", "4", "--max-epochs", "2", "--seed", "3", "--concurrency", "1", "--scheduler", "cost-asha",
        "--sampler", "tpe", "--time-budget", "none"]  # a busy machine must not cut a run short


@pytest.fixture(scope="module")
def searches(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    for name in ("first", "second"):
        assert main(["search", *ARGS, "--output", str(out), "--name", name]) == 0
    return SearchRun(out / "first"), SearchRun(out / "second")


def trial_order(epochs: pd.DataFrame) -> dict[str, int]:
    """Each trial's place in the order the trials ran (one at a time: by their first epoch's time)."""
    started = epochs.groupby("trial_id")["time"].min().sort_values()
    return {trial_id: i for i, trial_id in enumerate(started.index)}


def in_trial_order(frame: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Rows in the order the trials ran (``trial``: see ``trial_order``), without the run columns."""
    keys = ["trial"] + (["epoch"] if "epoch" in frame.columns else [])
    frame = frame.assign(trial=frame["trial_id"].map(trial_order(epochs))).sort_values(keys, ignore_index=True)
    return frame.drop(columns=[c for c in RUN_COLUMNS if c in frame.columns])


@pytest.mark.slow
def test_the_same_seeded_search_twice_gives_the_same_trials_decisions_and_accuracies(searches):
    first, second = searches
    trials = [in_trial_order(run.trials(), run.epochs()) for run in searches]
    assert len(trials[0]) == 5 and trials[0]["probe"].sum() == 1, "four trials and the probe, which is deterministic too"
    pd.testing.assert_frame_equal(trials[0], trials[1], check_exact=True)  # configs in order, statuses, epochs_run, accuracies
    epochs = [in_trial_order(run.epochs(), run.epochs()) for run in searches]
    pd.testing.assert_frame_equal(epochs[0], epochs[1], check_exact=True)  # every epoch's losses, to the last bit
    assert first.scheduler_file.read_text() == second.scheduler_file.read_text()  # the same unit and rungs, known up front


@pytest.mark.slow
def test_calibrated_cost_predictions_are_within_2x_of_the_measured_seconds_of_every_epoch_that_runs_the_backbone(searches):
    # A probe's seconds are its feature pass plus a scikit-learn fit, which the cost model does not price.
    runs = [(run, *recorded_cost_model(run)) for run in searches]
    costed = [recorded_costs(model, table_configs(run.trials()), run.epochs()[lambda e: ~e["probe"]]) for run, model, _ in runs]
    # The pooled-feature cache is shared by the trials of a search and the probe (one backbone at one resolution)
    # filled it before any trial, so no cached epoch runs the backbone. (The model still charges every trial's first
    # cached epoch for filling it, so that a prediction does not depend on which trial came first.) Epochs that train
    # only a head on cached features take milliseconds of per-batch overhead, which FLOPs do not count: they are held
    # to being far cheaper than a fine-tune epoch instead.
    assert all(run.trials()["probe"].sum() == 1 for run in searches)
    # A phase is a trial's epochs of one prediction; both searches ran the same trials in the same order, so each
    # phase was measured in both. Its seconds are the fastest of those epochs: a busy machine only ever adds time
    # (on the shared 2-core CI machine one epoch of a config once took 2.6x another, and a phase 3x its prediction).
    # The phases that run the backbone from pixels: a trial's first epoch, and every epoch of a trial without a boundary
    # cache. A boundary-cached trial's later epochs run only its top blocks on cached activations, which FLOPs overprice
    # (about 3x for Lite0's last block at 32 px: a dense 1x1 convolution on 1x1 maps does several times more FLOPs per
    # second than the depthwise convolutions below it); they are held to costing less than their trial's first epoch,
    # predicted and measured, which is what ranking configs by cost needs.
    timed = pd.concat([epochs.assign(trial=epochs["trial_id"].map(trial_order(epochs)))[lambda f: ~f["cached_features"]]
                       for epochs in costed])
    # A trial whose boundary the probe's one pass kept (training.forward_once) reads it from its first epoch: that
    # epoch is priced and runs as its later ones do (only the top blocks), not from pixels.
    by_epoch = timed.pivot_table(index="trial", columns="epoch", values="epoch_cost", aggfunc="min")
    second = by_epoch[2] if 2 in by_epoch else by_epoch[1] * 0
    probe_fed = set(by_epoch.index[by_epoch[1] == second]) & set(timed.loc[timed["cached_blocks"] > 0, "trial"])
    from_cache = (timed["cached_blocks"] > 0) & ((timed["epoch"] > 1) | timed["trial"].isin(probe_fed))
    first = timed[timed["epoch"] == 1].groupby("trial")[["epoch_cost", "epoch_seconds"]].min()
    later = timed[from_cache & (timed["epoch"] > 1)].groupby("trial")[["epoch_cost", "epoch_seconds"]].min()  # as fast as it ran
    fills = later.index.difference(sorted(probe_fed))  # first epochs that computed their own boundary cache
    assert len(later) and (later["epoch_cost"] <= first.loc[later.index, "epoch_cost"]).all(), (later, first)
    assert (later.loc[fills] < first.loc[fills]).all(axis=None), (later, first)
    phases = timed[~from_cache].groupby(["trial", "epoch_cost"], as_index=False)["epoch_seconds"].min()
    ratio = seconds_per_flop(phases["epoch_cost"].tolist(), phases["epoch_seconds"].tolist())
    off = (phases["epoch_cost"] * ratio / phases["epoch_seconds"]).round(2).tolist()
    assert len(off) >= 1 and all(0.5 <= r <= 2.0 for r in off), f"predicted / measured seconds per epoch: {off}"
    # Probe-fed first epochs run only the top blocks, which FLOPs overprice (about 3x, above). They take a quarter of a
    # second, so on a busy machine their seconds are noise against the ratio fitted on whole epochs: on the shared CI
    # machine one came out 6.3x overpriced, in the next run one 4.3x underpriced. Held instead: none costs as much as
    # the search's dearest from-pixels first epoch (the whole-model fine-tune's), predicted or measured.
    fed = timed[timed["trial"].isin(probe_fed) & (timed["epoch"] == 1)].groupby("trial")[["epoch_cost", "epoch_seconds"]].min()
    assert len(off) + len(fed) >= 3
    pixels = first.drop(sorted(probe_fed))
    assert len(fed) == 0 or (fed.max() < pixels.max()).all(), (fed, pixels)
    epochs, unit = costed[0], runs[0][2]
    # a cached trial's epochs after its first
    head_only = epochs[epochs["cached_features"]].sort_values("time").groupby("trial_id").tail(-1)
    # (None when every head-only draw was a linear head on a probed backbone: those are the probe's and never start.)
    assert (head_only["epoch_cost"] < unit / 20).all() and (head_only["epoch_seconds"] < unit * ratio / 20).all()
