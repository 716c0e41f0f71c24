"""Benchmark: seconds per head-only epoch with and without the frozen-feature cache.

Runs real ``fit`` calls on the bundled digits data with the bundled Lite0 backbone:

1. uncached: the backbone runs on every batch of every epoch;
2. cold: the first trial with the cache (its first epoch computes and stores the features);
3. warm: a second trial on the same cache (reads the features from disk, then trains the head only).

``ratio`` is uncached seconds per epoch / warm seconds per epoch: what every head-only trial after the
first one gains. Run it with ``python -m tune_tl.bench.cache [--resolution 64] [--epochs 3]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile

import torch

from tune_tl.config import TrialConfig, parse_settings
from tune_tl.training.context import prepare_context
from tune_tl.training.loop import fit
from tune_tl.training.recipe import build_trial


def measure_feature_cache(
    backbone: str = "efficientnet_lite0",
    resolution: int = 64,
    epochs: int = 3,
    batch_size: int = 64,
    threads: int = 1,
    seed: int = 0,
) -> dict:
    """Time head-only training on digits uncached, cold-cached and warm-cached; return seconds and ratios.

    ``threads`` is torch's CPU thread count, the share a 1-CPU trial gets.
    """
    torch.set_num_threads(threads)
    spec = parse_settings({"seed": seed, "backbone": {"name": backbone}, "budget": {"samples": 1, "max_epochs": epochs},
                           "params": {"resolution": resolution, "batch_size": batch_size, "freeze_policy": "head_only", "lr": 1e-2}},
                          "feature-cache benchmark", allow_params=True)
    context = prepare_context(spec).context
    split = context.data.splits[resolution]
    config = TrialConfig.from_dict({p.name: p.dist.value for p in spec.params})

    def run(cache: str | None):
        plan = build_trial(config, dataclasses.replace(context, feature_cache=cache), "cpu")
        return fit(plan.model, plan.split, plan.fit, param_groups=plan.param_groups)

    uncached = run(None)
    with tempfile.TemporaryDirectory() as cache:
        cold = run(cache)
        warm = run(cache)
    per_epoch = statistics.mean(m.epoch_seconds for m in uncached)
    warm_per_epoch = statistics.mean(m.epoch_seconds for m in warm)
    return {
        "backbone": backbone,
        "resolution": resolution,
        "train_images": len(split.train_y),
        "val_images": len(split.val_y),
        "threads": threads,
        "epochs": epochs,
        "uncached_s_per_epoch": per_epoch,
        "cold_first_epoch_s": cold[0].epoch_seconds,
        "cold_later_s_per_epoch": statistics.mean(m.epoch_seconds for m in cold[1:]) if epochs > 1 else None,
        "warm_s_per_epoch": warm_per_epoch,
        "ratio": per_epoch / warm_per_epoch,
        "same_val_acc": [m.val_acc for m in uncached] == [m.val_acc for m in warm],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    r = measure_feature_cache(args.backbone, args.resolution, args.epochs, args.batch_size, args.threads)
    print(f"| {r['backbone']} @ {r['resolution']} px, {r['train_images']}+{r['val_images']} images, {r['threads']} thread(s) | s/epoch |")
    print("|---|---|")
    print(f"| uncached (backbone every batch) | {r['uncached_s_per_epoch']:.3f} |")
    print(f"| cached, first trial, epoch 1 (computes features) | {r['cold_first_epoch_s']:.3f} |")
    if r["cold_later_s_per_epoch"] is not None:
        print(f"| cached, first trial, later epochs | {r['cold_later_s_per_epoch']:.4f} |")
    print(f"| cached, later trial (features from disk) | {r['warm_s_per_epoch']:.4f} |")
    print(f"\nspeed-up per head-only epoch: {r['ratio']:.0f}x; same val_acc as uncached: {r['same_val_acc']}")


if __name__ == "__main__":
    main()
