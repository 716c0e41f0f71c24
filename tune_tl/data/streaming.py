"""The streaming fallback: decode image files per epoch in DataLoader workers.

Used only when an image folder's decoded arrays would exceed ``data.memory_budget_mb``. Each file
is decoded and resized exactly as the in-memory path does (``preprocess.load_rgb`` +
``square_uint8``), so a trial sees the same pixels either way; only where and when differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tune_tl.data.preprocess import load_rgb, square_uint8


class ImageFiles(Dataset):
    """``files[i]`` decoded to uint8 ``(3, R, R)`` with its label."""

    def __init__(self, files: tuple[str, ...], labels: np.ndarray, resolution: int):
        self.files, self.labels, self.resolution = files, labels, resolution

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        # A contiguous copy: the square is a transposed view of PIL's read-only buffer, which torch warns about.
        pixels = np.ascontiguousarray(square_uint8(load_rgb(self.files[i]), self.resolution))
        return torch.from_numpy(pixels), int(self.labels[i])


def file_batches(files: tuple[str, ...], labels: np.ndarray, resolution: int, batches: Iterable[np.ndarray],
                 num_workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield uint8 image and int64 label tensors for each batch of indices, decoded by ``num_workers`` processes."""
    loader = DataLoader(
        ImageFiles(files, labels, resolution),
        batch_sampler=[list(map(int, b)) for b in batches],
        num_workers=num_workers,
        persistent_workers=False,
    )
    yield from loader
