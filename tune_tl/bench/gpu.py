"""``python -m tune_tl.bench gpu``: what one GPU does for a search; prints one markdown table.

Two figures a GPU owner asks first:
- fine-tuning throughput (images/s, the whole model training, AMP and ``channels_last`` as ``fit``
  uses them) for EfficientNet-Lite0 and a ResNet-50-sized model (torchvision ``resnet50``, random
  weights: ``weights: none``, nothing downloaded);
- trials/hour of a small real search (Ray Tune + Optuna, FIFO, 8 trials × 2 epochs of Lite0 on
  digits at 32 px) when each trial gets 1, 0.5 or 0.25 of the GPU, i.e. 1, 2 or 4 trials share it.

On a machine without CUDA it prints one line saying so and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
from pathlib import Path

from tune_tl.bench.suite import fixed_spec, machine, search_figures
from tune_tl.config import load_space
from tune_tl.models import TransferModel, build_backbone, build_head
from tune_tl.search.session import init_ray
from tune_tl.training.batches import amp
from tune_tl.training.device import memory_format

log = logging.getLogger(__name__)

MODELS = (("efficientnet_lite0", "imagenet"), ("resnet50", "none"))
SHARES = (1.0, 0.5, 0.25)


def images_per_second(name: str, weights: str, resolution: int, batch_size: int, steps: int, warmup: int = 5,
                      device: str = "cuda") -> float:
    """Training steps/s × batch on random images: forward, backward and AdamW step of the whole model."""
    import torch
    import torch.nn.functional as F


    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    backbone = build_backbone(name, weights)
    model = TransferModel(backbone, build_head("linear", backbone.num_features, 10)).to(device, memory_format=memory_format(device))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast, scaler = amp(device)
    x = torch.randn(batch_size, 3, resolution, resolution, device=device).contiguous(memory_format=memory_format(device))
    y = torch.randint(0, 10, (batch_size,), device=device)

    def step() -> None:
        with autocast:
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch_size / (time.perf_counter() - start)


def trials_per_hour(out: Path, share: float, samples: int, epochs: int) -> tuple[float, dict]:
    """A real search of ``samples`` fixed Lite0 trials with ``share`` of the GPU each."""

    spec = fixed_spec(load_space(), epochs, batch_size=128)
    spec = dataclasses.replace(spec, budget=dataclasses.replace(spec.budget, samples=samples, max_epochs=epochs))
    figures = search_figures(spec, out, f"gpu-{share}", scheduler="fifo", gpus_per_trial=share, cpus_per_trial=1)
    return samples / figures["wall"] * 3600, figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tune_tl.bench gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=224, help="image size for the images/s figures (default 224)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size for the images/s figures (default 64)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per model (default 30)")
    parser.add_argument("--samples", type=int, default=8, help="trials per search for trials/hour (default 8)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("python -m tune_tl.bench gpu: no CUDA GPU on this machine; nothing measured")
        return
    logging.basicConfig(level=logging.WARNING)

    rows = []
    for name, weights in MODELS:
        ips = images_per_second(name, weights, args.resolution, args.batch_size, args.steps)
        rows.append((f"fine-tune {name} (weights {weights}), {args.resolution} px, batch {args.batch_size}, AMP", f"{ips:.0f} images/s"))
    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        for share in SHARES:
            per_hour, f = trials_per_hour(Path(tmp), share, args.samples, epochs=2)
            rows.append((f"search, {share:g} GPU per trial ({args.samples} Lite0 trials × 2 epochs, 32 px, FIFO)",
                         f"{per_hour:.0f} trials/hour (wall {f['wall']:.0f} s, best val_acc {f['best']:.4f})"))
    print(f"\nMachine: {machine()}\nGPU: {torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} visible\n")
    print("| measurement | figure |\n|---|---|")
    for what, figure in rows:
        print(f"| {what} | {figure} |")


if __name__ == "__main__":
    main()
