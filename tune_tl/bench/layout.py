"""Benchmark: images per second of a backbone on the CPU in the default layout and in ``channels_last``, side by side.

Trials, probes and ``predict`` run in ``channels_last`` (``training.device``); before, the CPU kept PyTorch's
default (``contiguous_format``). Both are timed in one process on the same random batches: eval (a probe's pass,
``predict``) and a training step (forward and backward through every block, as a whole-model fine-tune), the
fastest of a few repeats. The outputs in eval are compared too: the layout changes the speed, not the answer.
A third eval column times what the frozen passes (a probe's features, kept boundaries) run since: ``channels_last``
with each batch norm folded into its convolution (``models.folding``), against the same outputs.

    python -m tune_tl.bench.layout                                    # the bundled Lites at 32, 64, 128, 224 px
    python -m tune_tl.bench.layout --backbones efficientnet_lite0 --resolutions 224 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from tune_tl.models import build_backbone
from tune_tl.models.folding import folded

LAYOUTS = {"contiguous_format (before)": torch.contiguous_format, "channels_last (now)": torch.channels_last}
FOLDED = "eval, channels_last + folded batch norms (frozen passes)"


def images_per_second(module: torch.nn.Module, x: torch.Tensor, train: bool, repeats: int) -> float:
    """The fastest of ``repeats`` passes (eval) or steps (forward and backward), in images per second."""
    module.train(train)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        if train:
            module(x).mean().backward()
        else:
            with torch.inference_mode():
                module(x)
        best = min(best, time.perf_counter() - start)
    return len(x) / best


def measure_layouts(backbone: str, resolution: int, batch_size: int, repeats: int = 3) -> dict:
    """One backbone at one resolution: eval and training images/s per layout, and the largest eval output difference."""
    features = build_backbone(backbone).features
    x = torch.randn(batch_size, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    row: dict = {"backbone": backbone, "resolution": resolution}
    outputs = []
    for name, layout in LAYOUTS.items():
        # a fresh copy each: the training steps move batch norm's running statistics
        module, batch = copy.deepcopy(features).to(memory_format=layout), x.contiguous(memory_format=layout)
        with torch.inference_mode():
            outputs.append(module.eval()(batch))
        row[f"eval, {name}"] = images_per_second(module, batch, False, repeats)
        row[f"train, {name}"] = images_per_second(module, batch, True, max(2, repeats - 1))
    row["eval outputs differ by"] = float((outputs[0] - outputs[1]).abs().max())
    plain = copy.deepcopy(features).to(memory_format=torch.channels_last).eval()
    fast = folded(plain, batch[:2])
    with torch.inference_mode():
        row["folded outputs differ by"] = float((fast(batch) - outputs[1]).abs().max())
    row[FOLDED] = images_per_second(fast, batch, False, repeats)
    return row


def markdown(rows: list[dict]) -> str:
    names = list(LAYOUTS)
    head = ["backbone", "px", *(f"{kind}, {n}" for kind in ("eval", "train") for n in names), "eval speed-up", "train speed-up",
            "eval outputs differ by", FOLDED, "folding speed-up", "folded outputs differ by"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["backbone"], str(r["resolution"]), *(f"{r[f'{kind}, {n}']:.1f}" for kind in ("eval", "train") for n in names),
                 *(f"{r[f'{kind}, {names[1]}'] / r[f'{kind}, {names[0]}']:.2f}x" for kind in ("eval", "train")),
                 f"{r['eval outputs differ by']:.1e}", f"{r[FOLDED]:.1f}", f"{r[FOLDED] / r[f'eval, {names[1]}']:.2f}x",
                 f"{r['folded outputs differ by']:.1e}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tune_tl.bench.layout", description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
    p.add_argument("--resolutions", nargs="+", type=int, default=[32, 64, 128, 224])
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: every core)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"images/s on the CPU, {args.threads} thread(s), batch 128 at <= 64 px, 64 at 128 px, 32 above")
    rows = []
    for backbone in args.backbones:
        for resolution in args.resolutions:
            rows.append(measure_layouts(backbone, resolution, 128 if resolution <= 64 else 64 if resolution <= 128 else 32))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
