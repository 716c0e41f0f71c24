"""A disk cache of frozen-backbone features shared by every trial on the machine.

When a trial's whole backbone is frozen for an epoch (a ``head_only`` trial, or the probe phase of LP→FT)
and the epoch has no input augmentation, the backbone's pooled output for each image is the same in every
such epoch of every trial with the same backbone weights, resolution and data. The training loop then
computes it once, stores it here, and trains the head on it.

Entries live in ``<search folder>/feature_cache/<key>.npz``. The key is a hash of everything the features
depend on: backbone name, a fingerprint of its current weights and buffers (so a fine-tuned or different
checkpoint can never hit), input normalisation, resolution, cut point and a fingerprint of the images and
labels. Each file also stores its key and is checked against the expected shapes on read, so a stale or
truncated entry is recomputed, never served. Files are written under a temporary name and renamed into
place; a lock file makes concurrent trials that need the same entry compute it once.

    >>> cache = FeatureCache("results/demo/feature_cache")
    >>> arrays = cache.load_or_compute(key, lambda: {"train": ..., "val": ...}, {"train": 1437, "val": 360})
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tune_tl.store.storage import replace_durably

log = logging.getLogger(__name__)

FORMAT = "1"  # bump when the stored layout or the way features are computed changes


def fingerprint_module(module: nn.Module) -> str:
    """Hash of every parameter and buffer (name, dtype, shape, bytes) of ``module``."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():  # bytes via a flat uint8 view: works for every dtype, bfloat16 included
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def make_key(**parts) -> str:
    """A file-name-safe key from named parts (all of which must be JSON-serialisable)."""
    text = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


class FeatureCache:
    """Directory of ``<key>.npz`` feature files, written atomically, checked on read."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0

    def load_or_compute(
        self,
        key: str,
        compute: Callable[[], Mapping[str, np.ndarray]],
        rows: Mapping[str, int],
    ) -> dict[str, np.ndarray]:
        """The arrays stored under ``key``, computing and storing them first if absent or invalid.

        Args:
            key: From :func:`make_key`.
            compute: Returns the arrays (name -> float array with one row per image).
            rows: Expected row count per array name; an entry that disagrees is treated as missing.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{key}.npz"
        with _locked(self.directory / f".{key}.lock"):
            arrays = self._read(path, key, rows)
            if arrays is not None:
                self.hits += 1
                return arrays
            self.misses += 1
            return self._write(path, key, compute(), np.float32)

    def has(self, key: str, rows: Mapping[str, int]) -> bool:
        """Whether an entry with these arrays is stored under ``key`` (its key and names only: no array is read)."""
        try:
            with np.load(self.directory / f"{key}.npz", allow_pickle=False) as data:
                return str(data["__key__"]) == key and set(data.files) == {"__key__", *rows}
        except Exception:  # absent, truncated or foreign: not there
            return False

    def get(self, key: str, rows: Mapping[str, int]) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``key``, or ``None`` (nothing is computed)."""
        arrays = self._read(self.directory / f"{key}.npz", key, rows)
        if arrays is not None:
            self.hits += 1
        return arrays

    def put(self, key: str, arrays: Mapping[str, np.ndarray], dtype=np.float32) -> None:
        """Store ``arrays`` (one row per image; any trailing shape) under ``key`` as ``dtype``, replacing any entry."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with _locked(self.directory / f".{key}.lock"):
            self._write(self.directory / f"{key}.npz", key, arrays, dtype, logging.DEBUG)  # its caller says what it kept

    def _write(self, path: Path, key: str, arrays: Mapping[str, np.ndarray], dtype, level: int = logging.INFO) -> dict[str, np.ndarray]:
        arrays = {name: np.ascontiguousarray(value, dtype=dtype) for name, value in arrays.items()}
        tmp = self.directory / f".{key}.{uuid.uuid4().hex[:8]}.tmp.npz"
        np.savez(tmp, __key__=np.array(key), **arrays)
        replace_durably(tmp, path)
        log.log(level, "feature cache: stored %s (%s)", path.name, ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))
        return arrays

    @staticmethod
    def _read(path: Path, key: str, rows: Mapping[str, int]) -> dict[str, np.ndarray] | None:
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["__key__"]) != key or set(data.files) != {"__key__", *rows}:
                    raise ValueError("key or arrays differ")
                arrays = {name: data[name] for name in rows}
            if any(arrays[name].shape[0] != n or arrays[name].ndim < 2 for name, n in rows.items()):
                raise ValueError("shapes differ")
            return arrays
        except Exception as exc:  # truncated, foreign or stale: recompute rather than serve it
            log.warning("feature cache: ignoring invalid entry %s (%s)", path, exc)
            return None


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
