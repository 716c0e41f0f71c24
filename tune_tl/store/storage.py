"""Where a search's files live: a local folder or a cloud URI, through pyarrow filesystems.

``--output`` may be a local (or shared, e.g. NFS) path, or a URI that ``pyarrow.fs.FileSystem.from_uri``
understands: ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``file:///abs/path``. Credentials and
endpoints come from the environment the way pyarrow reads them (``AWS_*``, ``AWS_ENDPOINT_URL``,
``GOOGLE_APPLICATION_CREDENTIALS``, ...) or from the URI's query string. Ray Tune is handed the same
filesystem, so trial checkpoints, Ray's experiment state and tune_tl's Parquet results land side by side.

Writes are whole-file: locally under a hidden temporary name renamed into place, on an object store
as one PUT (an object appears whole or not at all). Either way a reader never sees half a file.

    >>> root = Location.parse("s3://my-bucket/results") / "demo"   # doctest: +SKIP
    >>> root.write_text("{}", "notes.json")                        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tune_tl.errors import TuneTLError

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class Location:
    """A folder (or file) on a pyarrow filesystem; picklable, so Ray callbacks can hold one."""

    def __init__(self, fs: pafs.FileSystem, path: str, scheme: str | None = None):
        self.fs, self.path, self.scheme = fs, path.rstrip("/") or "/", scheme

    @classmethod
    def parse(cls, where: str | Path | Location) -> Location:
        """A local path (made absolute) or a URI; a URI pyarrow cannot open is a ``TuneTLError``."""
        if isinstance(where, Location):
            return where
        text = str(where)
        if not _SCHEME.match(text):
            return cls(pafs.LocalFileSystem(), str(Path(text).expanduser().resolve()))
        scheme = text.split("://", 1)[0].lower()
        try:
            fs, path = pafs.FileSystem.from_uri(text)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise TuneTLError(f"--output {text!r}: pyarrow cannot open this URI ({exc})") from exc
        if isinstance(fs, pafs.LocalFileSystem):
            return cls(fs, path)  # file:// is just a local folder
        return cls(fs, path, scheme)

    # -- naming
    @property
    def is_local(self) -> bool:
        return self.scheme is None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        return Location(self.fs, self.path.rsplit("/", 1)[0] or "/", self.scheme)

    def __truediv__(self, name: str) -> Location:
        return Location(self.fs, f"{self.path}/{name}", self.scheme)

    def __str__(self) -> str:
        return self.path if self.is_local else f"{self.scheme}://{self.path}"

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __reduce__(self):
        return Location, (self.fs, self.path, self.scheme)

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise TuneTLError(f"{self} is not on the local filesystem")
        return Path(self.path)

    def local_mirror(self, kind: str) -> Path:
        """A folder on this machine standing in for this remote location (for an SQLite file or a cache):
        the same on every node and every run, so a pickled path to it stays valid."""
        digest = hashlib.sha1(str(self).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"tune_tl-{kind}" / f"{self.name}-{digest}"

    # -- queries
    def _type(self) -> pafs.FileType:
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def size(self) -> int | None:
        """This file's size in bytes (``None``: not a file), without reading it."""
        info = self.fs.get_file_info(self.path)
        return info.size if info.type == pafs.FileType.File else None

    def files(self, prefix: str = "", suffix: str = "") -> list[Location]:
        """Files directly in this folder whose names match, sorted by name; none if it does not exist."""
        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File)
        return [self / n for n in names if n.startswith(prefix) and n.endswith(suffix)]

    # -- reading and writing whole files
    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def write_bytes(self, data: bytes) -> None:
        """Replace this file's content with ``data``, never leaving a partial file behind."""
        if not self.is_local:  # one PUT: the object appears whole; object stores have no folders to create
            with self.fs.open_output_stream(self.path) as f:
                f.write(data)
            return
        self.parent.mkdir()
        tmp = self.parent / f".{self.name}.{uuid.uuid4().hex[:8]}.tmp"  # leading dot: readers skip it
        with self.fs.open_output_stream(tmp.path) as f:
            f.write(data)
        self.fs.move(tmp.path, self.path)  # a rename: atomic on one local filesystem

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_parquet(self, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.write_bytes(sink.getvalue().to_pybytes())

    def delete(self) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            pass

    def delete_tree(self) -> None:
        """Remove this folder and everything in it (nothing happens if it is not there)."""
        try:
            self.fs.delete_dir(self.path)
        except FileNotFoundError:
            pass

    def folders(self, prefix: str = "") -> list[Location]:
        """Folders directly in this folder whose names start with ``prefix``, sorted by name."""
        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return [self / n for n in sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory) if n.startswith(prefix)]

    def mtime(self) -> float | None:
        """Seconds since the epoch of the last change to this file, or ``None`` if it is not there."""
        info = self.fs.get_file_info(self.path)
        return None if info.type == pafs.FileType.NotFound or info.mtime is None else info.mtime.timestamp()

    def check_writable(self) -> None:
        """Fail now, saying why, if files cannot be created here (no such bucket, no credentials)."""
        probe = self / f".tune_tl-probe-{uuid.uuid4().hex[:8]}"
        try:
            self.mkdir()  # on an object store: "Bucket 'x' not found", clearer than a failed upload
            probe.write_bytes(b"")
            probe.delete()
        except OSError as exc:
            raise TuneTLError(f"--output {self}: cannot write there ({exc})") from exc

    def download(self, local: Path) -> bool:
        """Copy this file to ``local``; False if it does not exist."""
        if not self.is_file():
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(self.read_bytes())
        return True

    def upload(self, local: Path) -> None:
        """Copy the local file ``local`` here (whole-file, as ``write_bytes``)."""
        self.write_bytes(local.read_bytes())

    def upload_tree(self, local: Path) -> None:
        """Copy the local folder ``local`` here, file by file."""
        pafs.copy_files(str(local), self.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)


_SECRET_QUERY = re.compile(r"(?i)([?&][^=&]*(?:key|secret|token|password|credential|session)[^=&]*=)[^&]*")
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """``text`` with the credentials a URI can carry (``user:secret@``, ``?secret_key=...``) replaced by ``***``:
    search.json is read by whoever can read the results."""
    if "://" not in text:
        return text
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text))
