"""Where the training loop's tensors live and in what layout.

Models and image batches use ``channels_last``: on CUDA the layout tensor-core convolutions run in natively (AMP
needs no transposes); on the CPU, oneDNN's depthwise convolutions run in it about twice as fast (EfficientNet-Lite0
at 224 px on 2 cores, measured: 43 -> 72 images/s in eval, 9.7 -> 15.7 training; at 32 px 705 -> 4,184 and
218 -> 782; ResNet-18 1.0-1.35x: no depthwise convolutions). On CUDA, in-memory uint8 data is also copied to the GPU once when it fits, so
batches are indexed there instead of crossing PCIe every step.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from tune_tl.data.types import FileSplit, Split

#: Largest share of the GPU's free memory that resident data may take: fractional-GPU trials share it.
RESIDENT_FRACTION = 0.25


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout of 4-d activations, weights and batches on ``device``: ``channels_last`` (see the module's docstring)."""
    return torch.channels_last


def cpu_runs_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), so oneDNN's bfloat16 convolutions beat its
    float32 ones (``batches.frozen_dtype``). torch says so only through ``torch.cpu``'s private probes
    (``tests/test_frozen_dtype.py`` checks the installed torch has them); without them the answer is no: slower, never wrong."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(probe()) for probe in probes if callable(probe))


def resident_on_device(nbytes: int, device: torch.device, free_bytes: int | None = None) -> bool:
    """Whether ``nbytes`` of data should live on ``device`` for the whole run.

    Only on CUDA, and only within ``RESIDENT_FRACTION`` of the free memory (``free_bytes``, by default
    asked of the GPU now), leaving the rest to this trial's activations and to the trials beside it.
    """
    if device.type != "cuda":
        return False
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_FRACTION * free_bytes


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` now: the GPU's free memory, or on the CPU the host's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:  # Linux: what can be allocated without swapping, page cache included
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        pass
    try:  # other Unix: free pages only
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0  # unknown: assume nothing is free rather than too much


def resident_split(split: Split | FileSplit, device: torch.device, parts=("train", "val")) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{part: (images, labels)}`` copied to ``device`` once, or ``{}`` to copy batch by batch.

    All parts or none: a streaming ``FileSplit`` and data that ``resident_on_device`` refuses stay on the host.
    """
    if isinstance(split, FileSplit):
        return {}
    arrays = {part: (getattr(split, f"{part}_x"), getattr(split, f"{part}_y")) for part in parts}
    if not resident_on_device(sum(x.nbytes + y.nbytes for x, y in arrays.values()), device):
        return {}
    return {part: (_to(x, device), _to(y, device)) for part, (x, y) in arrays.items()}


def _to(a: np.ndarray, device: torch.device) -> torch.Tensor:
    with warnings.catch_warnings():  # Ray's arrays are read-only; they are only read (copied) here
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(a).to(device)
