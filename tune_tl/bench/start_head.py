"""Benchmark: the first epochs of probe-started fine-tunes, from the probe's own head and from the start head.

One backbone on one image folder: stage 0's probe (``measure_probe``, the feature cache on, so every fine-tune's first
epoch runs its trainable blocks only), then the same fine-tunes (``head_init: probe``, AdamW, no augmentation, cosine
over 2 epochs) over ``freeze_blocks`` × ``bn_stats`` × ``lr``, once from each head as ``build_model`` gets it:

1. ``probe``: the probe's own head (per-feature standardised fit; what fine-tunes started from before 2026-12-07);
2. ``start``: the start head (``fit_start_head``: one scale for all features; what a search's trials start from now).

Both are scaled down to a fresh head's norm by ``build_model`` where larger. Prints each run's val accuracy after
epochs 1 and 2 beside the probe's, and per head the means and how many first epochs stayed within a point of it.

Run it with ``python -m tune_tl.bench.start_head --data FOLDER [--backbone efficientnet_lite0] [--resolution 224]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import tempfile

import torch

from tune_tl.config import TrialConfig, parse_settings
from tune_tl.models import build_backbone
from tune_tl.training.context import prepare_context
from tune_tl.training.linear_probe import measure_probe
from tune_tl.training.loop import fit
from tune_tl.training.recipe import build_trial

FREEZE, BN_STATS, LRS = (6, 8), ("update", "frozen"), (1e-4, 1e-3)


def measure_start_heads(data: str, backbone: str = "efficientnet_lite0", resolution: int = 224,
                        epochs: int = 2) -> tuple[float, list[dict]]:
    """The probe's val accuracy, and per fine-tune config and head the val accuracy after each epoch."""
    spec = parse_settings({"seed": 0, "data": {"source": "imagefolder", "path": data}, "backbone": {"name": backbone},
                           "budget": {"samples": 1, "max_epochs": epochs}, "params": {"resolution": resolution}},
                          "start-head benchmark", allow_params=True)
    context = prepare_context(spec).context
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        split = context.data.splits[resolution]
        measured = measure_probe(build_backbone(backbone), split, context.data.num_classes, 0, cache, device="cpu", start_head=True)
        heads = {"probe": measured.probe, "start": measured.start}
        for freeze, bn, lr in itertools.product(FREEZE, BN_STATS, LRS):
            config = TrialConfig.from_dict({"resolution": resolution, "batch_size": 32, "optimizer": "adamw", "lr": lr,
                                            "weight_decay": 1e-4, "freeze_blocks": freeze, "bn_stats": bn, "head_init": "probe"})
            row = {"freeze_blocks": freeze, "bn_stats": bn, "lr": lr}
            for name, head in heads.items():
                trial_context = dataclasses.replace(context, feature_cache=cache, probe_heads={(backbone, resolution): head.tensors()})
                plan = build_trial(config, trial_context, "cpu")
                row[name] = [m.val_acc for m in fit(plan.model, plan.split, plan.fit, param_groups=plan.param_groups)]
            rows.append(row)
    return measured.val_acc, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="an image folder (<root>/train|val/<class>/*)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    probe, rows = measure_start_heads(args.data, args.backbone, args.resolution)
    print(f"{args.data}: {args.backbone} @ {args.resolution} px, probe val_acc {100 * probe:.2f} %; val_acc after epochs 1 / 2")
    print("| freeze_blocks | bn_stats | lr | from the probe's head | from the start head |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = [" / ".join(f"{100 * v:.1f}" for v in r[name]) for name in ("probe", "start")]
        print(f"| {r['freeze_blocks']} | {r['bn_stats']} | {r['lr']:g} | {cells[0]} | {cells[1]} |")
    for name in ("probe", "start"):
        first = [r[name][0] for r in rows]
        kept = sum(v >= probe - 0.01 for v in first)
        last = statistics.mean(r[name][-1] for r in rows)
        print(f"{name}: mean epoch 1 {100 * statistics.mean(first):.1f} %, mean epoch 2 {100 * last:.1f} %, "
              f"first epochs within a point of the probe or above: {kept} of {len(rows)}")


if __name__ == "__main__":
    main()
