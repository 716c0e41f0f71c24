"""Name → loader for the data sources a space file can name, ending in prepared, shared data."""

from __future__ import annotations

import dataclasses
import logging

from tune_tl.config.spec import DATA_SOURCES, DataSpec
from tune_tl.data.cifar10 import batch_files, load_cifar10
from tune_tl.data.digits import load_digits_images
from tune_tl.data.imagefolder import load_imagefolder
from tune_tl.data.manifest import hash_files
from tune_tl.data.prepare import prepare
from tune_tl.data.types import LabelledImages, LoadedData
from tune_tl.data.validate import check_memory
from tune_tl.errors import TuneTLError

log = logging.getLogger(__name__)



def with_data_path(data: DataSpec, path: str | None, skip_bad_images: bool = False, keep_duplicates: bool = False) -> DataSpec:
    """``data`` pointed at ``path`` (``--data``), with ``--skip-bad-images`` and ``--keep-duplicates`` applied.

    ``--data`` names an image folder unless the space itself says ``data.source: cifar10``: what a folder
    holds never decides how it is read, because CIFAR batch files are pickles and an image folder is data,
    never code (a shared folder with ``data_batch_*`` files in it stays an image folder).
    """
    if path is not None:
        data = dataclasses.replace(data, source="cifar10" if data.source == "cifar10" else "imagefolder", path=path)
    if skip_bad_images:
        data = dataclasses.replace(data, skip_bad_images=True)
    return dataclasses.replace(data, keep_duplicates=True) if keep_duplicates else data


def load_source(source: str, path: str | None = None) -> LabelledImages:
    """Load the in-memory images of ``source`` (``digits`` or ``cifar10``; image folders go through ``load_data``)."""
    if source == "digits":
        return load_digits_images()
    if source == "cifar10":
        return load_cifar10(path)
    raise TuneTLError(f"data.source: {source!r} has no in-memory loader; use one of {list(DATA_SOURCES)}")


def load_data(data: DataSpec, resolutions: list[int], seed: int) -> LoadedData:
    """The driver's one data step: load, validate, split and resize ``data`` (a ``DataSpec``).

    Runs before Ray starts, so every bad file or folder is reported first. Logs which path the
    data takes: in memory (shared zero-copy by all trials) or streamed from files per epoch.
    """
    if data.source == "imagefolder":
        if not data.path:
            raise TuneTLError("data.path: data.source imagefolder needs the folder's path (or pass --data PATH)")
        loaded = load_imagefolder(data.path, resolutions, data.val_fraction, seed, data.memory_budget_mb, data.skip_bad_images,
                                  keep_duplicates=data.keep_duplicates)
    else:
        images = load_source(data.source, data.path)
        count = len(images.labels) + (0 if images.test_labels is None else len(images.test_labels))
        need_mb = check_memory(count, resolutions, f"data.source {data.source}")  # before resizing, not a MemoryError during it
        prepared = prepare(images, resolutions, data.val_fraction, seed)
        if need_mb > data.memory_budget_mb:  # nothing to stream from: say so rather than fail later
            log.warning("%s at %s px needs %.0f MB, above data.memory_budget_mb %g; kept in memory anyway",
                        data.source, sorted(set(resolutions)), need_mb, data.memory_budget_mb)
        split = next(iter(prepared.splits.values()))
        description = (f"{data.source}: {prepared.num_classes} classes, {len(split.train_y)} train / {len(split.val_y)} val"
                       + (f" / {len(split.test_y)} test" if split.test_y is not None else "")
                       + f" images; in memory ({need_mb:.1f} MB) shared with every trial through Ray's object store")
        manifest = hash_files(*batch_files(data.path)) if data.source == "cifar10" else None
        loaded = LoadedData(prepared, (), description, manifest=manifest)
    log.info("data: %s", loaded.description)
    if loaded.skipped:
        log.warning("skipped %d bad image(s), e.g. %s", len(loaded.skipped), loaded.skipped[0])
    return loaded
