"""Bad input is found before Ray starts: one clear message naming the file or folder.

Two kinds of check. Structural ones (missing or unreadable folders, empty class folders, a single
class, a class present in ``train/`` but not in ``val/``) are always errors. File-level ones
(zero-byte, unreadable, not an image, corrupt or truncated) are errors too, unless the user asks
for ``skip_bad_images``: then the files are left out, counted and listed.
"""

from __future__ import annotations

import os
from pathlib import Path

from tune_tl.data.types import BadImage
from tune_tl.errors import TuneTLError
from tune_tl.store.storage import Location

SKIP_HINT = "fix or remove it, or pass --skip-bad-images to leave bad files out"


def check_folder(path: Path, what: str) -> None:
    """Raise unless ``path`` is a directory this process can list."""
    if not path.exists():
        raise TuneTLError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise TuneTLError(f"{what} {path} is not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise TuneTLError(f"{what} {path} cannot be read (permission denied)")


def list_dir(path: Path, what: str) -> list[os.DirEntry]:
    """The visible entries of a folder, sorted by name; unreadable folders are errors."""
    check_folder(path, what)
    try:
        with os.scandir(path) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise TuneTLError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def files_under(folder: Path, what: str = "class folder") -> list[str]:
    """Every visible file below ``folder``, recursively, sorted per folder; symlinks are followed.

    A folder reached twice on one path (a symlink to itself or to a parent: a loop) is an error
    naming the link, not an endless walk or an OSError traceback.
    """
    out: list[str] = []
    _walk(folder, what, out, ())
    return out


def _walk(folder: Path, what: str, out: list[str], ancestors: tuple[tuple[int, int], ...]) -> None:
    try:
        st = folder.stat()
    except OSError as exc:  # ELOOP: a link that points to itself
        raise TuneTLError(f"{what} {folder} cannot be read: {exc.strerror or exc}; remove the link or fix it") from None
    key = (st.st_dev, st.st_ino)
    if key in ancestors:
        raise TuneTLError(f"{folder} is a symlink loop (it leads back to a folder above it); remove the link")
    for entry in list_dir(folder, what):
        try:
            is_dir = entry.is_dir()  # follows symlinks
        except OSError:
            is_dir = False  # reported as an unreadable file when decoded
        if is_dir:
            _walk(Path(entry.path), what, out, ancestors + (key,))
        else:
            out.append(entry.path)  # symlinks included; a dangling or looping one is reported as unreadable


def check_memory(count: int, resolutions: list[int], where: str) -> float:
    """MB of uint8 arrays ``count`` images need at ``resolutions``; an error when over half this machine's RAM.

    Sources without a streaming path (digits, CIFAR-10) must fit in memory: better one line now than
    a MemoryError (or the kernel's OOM killer) after minutes of resizing.
    """
    need_mb = count * 3 * sum(r * r for r in set(resolutions)) / 2**20
    try:
        ram_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError, AttributeError):
        return need_mb
    if need_mb > ram_mb / 2:
        raise TuneTLError(f"{where}: {count} images at {sorted(set(resolutions))} px need {need_mb:,.0f} MB in memory, "
                          f"more than half of this machine's {ram_mb:,.0f} MB; use a lower params.resolution")
    return need_mb


def check_classes(split_dir: Path, classes: list[str], files: dict[str, list[str]]) -> None:
    """Every class folder holds files, and there are at least two classes."""
    for name in classes:
        if not files[name]:
            raise TuneTLError(f"class folder {split_dir / name} is empty; add images or remove the folder")
    if len(classes) < 2:
        found = f"only '{classes[0]}'" if classes else "no class folders"
        raise TuneTLError(
            f"{split_dir}: found {found}; an image folder needs at least 2 class folders "
            f"(<root>/<class>/<image> or <root>/train/<class>/<image>)"
        )


def check_same_classes(train_dir: Path, other_dir: Path, train: list[str], other: list[str]) -> None:
    """``val/`` (or ``test/``) has exactly the classes of ``train/``: labels must mean the same."""
    for name in train:
        if name not in other:
            raise TuneTLError(f"class folder {other_dir / name} is missing, but {train_dir / name} exists; "
                              f"every class needs images in {other_dir.name}/")
    for name in other:
        if name not in train:
            raise TuneTLError(f"class folder {other_dir / name} has no counterpart in {train_dir}/; "
                              f"a class must have training images")


def raise_or_skip(bad: list[BadImage], skip: bool) -> tuple[BadImage, ...]:
    """Raise for the first bad file (saying how many more), or return them all to be skipped."""
    if not bad or skip:
        return tuple(bad)
    more = f" ({len(bad) - 1} more bad file(s) after this one)" if len(bad) > 1 else ""
    raise TuneTLError(f"{bad[0]}{more}; {SKIP_HINT}")


def check_left_after_skipping(counts: dict[str, int], where: Path) -> None:
    """After skipping bad files every class must still have an image."""
    for name, n in counts.items():
        if n == 0:
            raise TuneTLError(f"class folder {where / name} has no usable images left after skipping bad files")


def write_skipped(skipped: tuple[BadImage, ...], path) -> None:
    """List skipped files, one ``path: reason`` a line, next to the results (a path or a ``Location``)."""
    Location.parse(path).write_text("".join(f"{b}\n" for b in skipped))
