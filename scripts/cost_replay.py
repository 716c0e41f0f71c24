"""Check the cost model against recorded curves, and replay cost-aware ASHA's decisions on them (docs/search.md).

Reads a recorded curve table (default: tune_tl/bench/curves/digits64.parquet, Lite0 at 64 px on digits), predicts
every recorded epoch with the cost model (its blocks counted with FlopCounterMode; no training), calibrates by the
median measured / predicted ratio, and prints predicted vs measured seconds per trial. Then it replays a one-worker
search (textbook recipes first) through the real CostASHA twice, with the recorded seconds jittered ±30 % per epoch,
on the predicted clock and on the old measured-seconds clock, and prints the rungs and the trials each stopped.

    python scripts/cost_replay.py [CURVES.parquet]
"""

import sys

import numpy as np
import pandas as pd

from tune_tl.bench.replay_samplers import TextbookFirst
from tune_tl.bench.sim import Curve, curves_from_table, simulate
from tune_tl.config.params import PARAMS, TrialConfig
from tune_tl.models import build_backbone
from tune_tl.search.cost_asha import CostASHA
from tune_tl.training.cost_model import CostModel, block_flops, seconds_per_flop

TRAIN, VAL, CLASSES = 1437, 360, 10  # digits, val_fraction 0.2


def config(curve: Curve) -> TrialConfig:
    return TrialConfig.from_row({k: v for k, v in curve.params.items() if k in PARAMS})


def describe(c: TrialConfig) -> str:
    depth = {"prefix": f" {c.freeze_blocks}", "surgical": f" {c.train_block}"}.get(c.freeze_policy, "")
    return f"{c.freeze_policy}{depth}{', lp ' + str(c.lp_epochs) if c.lp_epochs else ''}, {c.head}"


def replay(curves: list[Curve], scheduler: CostASHA, seed: int, max_epochs: int) -> tuple[dict, object]:
    """One simulated search with jittered seconds; returns {trial: epoch it was stopped at} and the trace."""
    jitter = np.random.default_rng(seed)
    jittered = [Curve(c.trial_id, c.params, c.val_acc, c.seconds * jitter.uniform(0.7, 1.3, len(c.seconds))) for c in curves]
    stopped, complete = {}, scheduler.on_trial_complete

    def on_trial_complete(controller, trial, result):
        if result["epoch"] < max_epochs:
            stopped[trial.trial_id.split("-")[0]] = result["epoch"]
        return complete(controller, trial, result)

    scheduler.on_trial_complete = on_trial_complete
    return stopped, simulate(jittered, scheduler, TextbookFirst(jittered, seed=0), workers=1, budget=1e12)


def main(path: str = "tune_tl/bench/curves/digits64.parquet") -> None:
    table = pd.read_parquet(path)
    curves = curves_from_table(table)
    for c in curves:  # Ray hands trials plain Python values
        c.params.update({k: v.item() if hasattr(v, "item") else v for k, v in c.params.items()})
    resolution = int(table["resolution"].iloc[0])
    lite0 = build_backbone("efficientnet_lite0", "none")
    model = CostModel({lite0.name: block_flops(lite0, [resolution])}, {lite0.name: lite0.num_features}, CLASSES,
                      TRAIN, VAL)
    predicted = [model.epoch_cost(config(c), e) for c in curves for e in range(1, len(c.seconds) + 1)]
    measured = [float(s) for c in curves for s in c.seconds]
    k = seconds_per_flop(predicted, measured)
    unit = model.fine_tune_epoch()
    print(f"calibration: {k * 1e9:.3f} s per GFLOP; a fine-tune epoch at {resolution} px: {unit / 1e9:.1f} GFLOP = {unit * k:.1f} s")
    print("| trial | config | epoch 1 predicted s | measured s | later epochs predicted s | measured s (median) |\n"
          "|---|---|---|---|---|---|")
    for c in curves:
        p = [model.epoch_cost(config(c), e) * k for e in range(1, len(c.seconds) + 1)]
        print(f"| {c.trial_id} | {describe(config(c))} | {p[0]:.3g} | {c.seconds[0]:.3g} | {np.median(p[1:]):.3g} "
              f"| {np.median(c.seconds[1:]):.3g} |")
    ratio = np.array(measured) / (np.array(predicted) * k)
    print(f"within 2x: {int(((ratio >= 0.5) & (ratio <= 2)).sum())} of {len(ratio)} epochs")
    max_epochs = max(len(c.seconds) for c in curves)
    for clock, model_or_none in (("predicted", model), ("measured", None)):
        for seed in (1, 2):
            scheduler = CostASHA("/nonexistent", metric="val_acc", mode="max", max_epochs=max_epochs, cost_model=model_or_none)
            stopped, trace = replay(curves, scheduler, seed, max_epochs)
            rungs = [f"{m / scheduler.unit:g} units" if model_or_none else f"{m:.1f} s" for m in scheduler.rungs]
            print(f"{clock} clock, jitter {seed}: rungs {', '.join(rungs)}; stopped {dict(sorted(stopped.items()))}; "
                  f"epochs trained {trace.epochs}; best {max(trace.best):.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
