"""An exclusive lock on a search folder, so two searches (or resumes) of one folder never run at once.

Two drivers writing one ``<output>/<name>`` would overwrite each other's ``search.json``, study and
checkpoints and interleave their Parquet rows. ``SearchLock`` takes ``fcntl.flock`` on
``<search>/.tune_tl.lock`` without waiting: the second driver gets a ``TuneTLError`` naming the
holder (host and pid) and exits with status 2. The kernel drops the lock when its process dies
(``kill -9`` included), so a crashed search never leaves a stale lock behind.

Limits: on a local folder the lock holds between all processes of the machine; on NFS (v4, or v3
with ``lockd``) Linux maps ``flock`` to a byte-range lock that the server enforces across machines.
Object stores (``s3://``, ``gs://``) have no locks: there the lock file is node-local (under the
temporary folder, keyed by the URI), so it only stops a second search started on the same machine.

    >>> with SearchLock(Location.parse("results/demo")):   # doctest: +SKIP
    ...     run_the_search()
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import platform
from pathlib import Path

from tune_tl.errors import TuneTLError
from tune_tl.store.storage import Location

log = logging.getLogger(__name__)

LOCK_FILE = ".tune_tl.lock"  # a leading dot: pyarrow, pandas and Ray skip it


class SearchLock:
    """Held from ``acquire`` (or ``with``) to ``release``; creates the search folder if needed.

    A lock that created the folder removes it again on release if nothing else was written there,
    so a search refused for bad data leaves no trace.
    """

    def __init__(self, root: Location | str | Path):
        self.root = Location.parse(root)
        folder = self.root.local_path if self.root.is_local else self.root.local_mirror("lock")
        self.folder = folder
        self.path = folder / LOCK_FILE
        self._fd: int | None = None
        self._created: list[Path] = []

    def acquire(self) -> SearchLock:
        if self._fd is not None:
            return self
        self._created = _make_dirs(self.folder)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                self._remove_created()
                raise TuneTLError(f"--output: cannot write in {self.folder} ({exc.strerror or exc})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                self._remove_created()
                raise TuneTLError(f"{self.root} is in use by another tune-tl search or resume ({holder}); "
                                  f"wait for it to end, or choose another --name") from None
            # The holder before us may have removed the file after we opened it: lock the file that is there now.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {platform.node()}\n".encode())
        self._fd = fd
        log.debug("locked %s", self.path)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still locked: the next taker re-checks the file it locked
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        self._remove_created()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> SearchLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _remove_created(self) -> None:
        for folder in reversed(self._created):  # deepest first; a folder with files in it stays
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; return the ones created, outermost first."""
    missing = []
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        missing.append(p)
    if missing and not os.access(missing[-1].parent, os.W_OK | os.X_OK) or not missing and not folder.is_dir():
        where = missing[-1].parent if missing else folder
        why = "not a folder" if where.exists() and not where.is_dir() else "permission denied"
        raise TuneTLError(f"--output: cannot write in {where} ({why})")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TuneTLError(f"--output: cannot create {folder} ({exc.strerror or exc})") from None
    return list(reversed(missing))


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"
