"""Benchmark: seconds per epoch of a frozen-prefix fine-tune, running the prefix every batch or from the boundary cache.

Real ``fit`` calls with the bundled Lite0 (ImageNet weights), no augmentation, for each ``freeze_blocks``:

1. uncached: the feature cache off, so the frozen blocks run on every batch of every epoch;
2. cached: the same trial with the cache on: its first epoch computes the frozen prefix's output for
   every train and val image once (``training.boundary_cache``); later epochs run ``blocks[k:]`` only;
3. after the probe: stage 0's probe runs first on the same cache (its one pass keeps the top boundaries:
   ``training.forward_once``), then the same trial: from a kept boundary, its first epoch runs ``blocks[k:]`` only too.

Run it with ``python -m tune_tl.bench.boundary [--data FOLDER] [--resolution 224] [--freeze 0 5 8]``;
without ``--data`` it uses scikit-learn's digits.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

import torch

from tune_tl.config import TrialConfig, parse_settings
from tune_tl.models import build_backbone
from tune_tl.training.context import prepare_context
from tune_tl.training.linear_probe import measure_probe
from tune_tl.training.loop import fit
from tune_tl.training.recipe import build_trial


def measure_boundary_cache(data: str | None = None, resolution: int = 224, freeze: tuple[int, ...] = (0, 5, 8), epochs: int = 2,
                           threads: int = 1) -> list[dict]:
    """Per ``freeze_blocks``: seconds of the first and the later epochs, uncached and boundary-cached, and the val accuracies."""
    torch.set_num_threads(threads)
    source = {"source": "imagefolder", "path": data} if data else {"source": "digits"}
    spec = parse_settings({"seed": 0, "data": source, "budget": {"samples": 1, "max_epochs": epochs},
                           "params": {"resolution": resolution, "batch_size": 32, "lr": 1e-3}},
                          "boundary-cache benchmark", allow_params=True)
    context = prepare_context(spec).context
    rows = []
    for k in freeze:
        config = TrialConfig.from_dict({"resolution": resolution, "batch_size": 32, "lr": 1e-3, "freeze_blocks": k})
        runs = {}
        split = context.data.splits[resolution]
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as probed:
            started = time.perf_counter()
            measure_probe(build_backbone(spec.backbone.names[0]), split, context.data.num_classes, 0, probed, device="cpu")
            probe_s = time.perf_counter() - started
            for name, folder in (("uncached", None), ("cached", cache), ("after_probe", probed)):
                plan = build_trial(config, dataclasses.replace(context, feature_cache=folder), "cpu")
                runs[name] = fit(plan.model, plan.split, plan.fit, param_groups=plan.param_groups)
        rows.append({
            "freeze_blocks": k, "images": (len(split.train_y), len(split.val_y)), "probe_s": probe_s,
            "cached_blocks": runs["cached"][-1].cached_blocks,
            **{f"{name}_first_s": history[0].epoch_seconds for name, history in runs.items()},
            **{f"{name}_later_s": statistics.mean(m.epoch_seconds for m in history[1:]) for name, history in runs.items()},
            "val_acc": {name: [round(m.val_acc, 4) for m in history] for name, history in runs.items()},
        })
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="an image folder (<root>/train|val/<class>/*); default: digits")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--freeze", type=int, nargs="+", default=[0, 5, 8])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch computes the cache")
    rows = measure_boundary_cache(args.data, args.resolution, tuple(args.freeze), args.epochs, args.threads)
    train, val = rows[0]["images"]
    print(f"Lite0 @ {args.resolution} px, {train}+{val} images, {args.threads} thread(s), s/epoch")
    print("| freeze_blocks | cached_blocks | uncached, epoch 1 | uncached, later | cached, epoch 1 (computes) | cached, later | "
          "after the probe, epoch 1 | probe (its pass + fit) | speed-up (epoch 1, after probe) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['freeze_blocks']} | {r['cached_blocks']} | {r['uncached_first_s']:.2f} | {r['uncached_later_s']:.2f} | "
              f"{r['cached_first_s']:.2f} | {r['cached_later_s']:.2f} | {r['after_probe_first_s']:.2f} | {r['probe_s']:.2f} | "
              f"{r['uncached_first_s'] / r['after_probe_first_s']:.1f}x |")
    for r in rows:
        print(f"freeze_blocks {r['freeze_blocks']}: val_acc " + ", ".join(f"{name} {accs}" for name, accs in r["val_acc"].items()))


if __name__ == "__main__":
    main()
