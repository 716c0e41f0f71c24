"""Where a search's files live: a local folder or a cloud URI, through pyarrow filesystems.

``--output`` may be a local (or shared, e.g. NFS) path, or a URI that ``pyarrow.fs.FileSystem.from_uri``
understands: ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``file:///abs/path``. Credentials and
endpoints come from the environment the way pyarrow reads them (``AWS_*``, ``AWS_ENDPOINT_URL``,
``GOOGLE_APPLICATION_CREDENTIALS``, ...) or from the URI's query string. Ray Tune is handed the same
filesystem, so trial checkpoints, Ray's experiment state and tune_tl's Parquet results land side by side.

Credentials are never pickled: a remote filesystem is wrapped (``_Rebuilt``) so that it pickles as its URI
without secrets and is rebuilt from that URI and the environment where it is unpickled (a Ray worker,
``tuner.pkl`` on resume). Credentials given in a URI are put in this process's environment
(``AWS_ACCESS_KEY_ID``, ...) so that the local Ray it starts inherits them; nothing writes them to disk.

Writes are whole-file: locally under a hidden temporary name, flushed to disk (``fsync`` of the file and
then of its folder, :func:`replace_durably`) and renamed into place; on an object store as one PUT (an
object appears whole or not at all). Either way a reader never sees half a file, and a power cut never
leaves a renamed file empty.

    >>> root = Location.parse("s3://my-bucket/results") / "demo"   # doctest: +SKIP
    >>> root.write_text("{}", "notes.json")                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
import urllib.parse
import uuid
from functools import lru_cache
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
        if scheme == "s3":  # pyarrow reads the credentials of a URI without them from the environment
            _export_credentials(text)
        try:
            fs, path = pafs.FileSystem.from_uri(without_secrets(text) if scheme == "s3" else text)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise TuneTLError(f"--output {redact(text)!r}: pyarrow cannot open this URI ({redact(str(exc))})") from None
        if isinstance(fs, pafs.LocalFileSystem):
            return cls(fs, path)  # file:// is just a local folder
        return cls(pafs.PyFileSystem(_Rebuilt(without_secrets(text), fs)), path, scheme)

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
        the same on every node and every run, so a pickled path to it stays valid. It lives in
        :func:`private_temp_root` (per user, mode 0700), never in a folder other users can write."""
        digest = hashlib.sha1(str(self).encode()).hexdigest()[:12]
        return private_temp_root() / kind / f"{self.name}-{digest}"

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
        tmp = Path(self.parent.path) / f".{self.name}.{uuid.uuid4().hex[:8]}.tmp"  # leading dot: readers skip it
        tmp.write_bytes(data)
        replace_durably(tmp, Path(self.path))

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_parquet(self, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.write_bytes(sink.getvalue().to_pybytes())

    def move_to(self, target: Location) -> None:
        """Rename this file (already written whole, and flushed if local) to ``target`` on the same filesystem; locally
        the folder is flushed after, so the rename survives a power cut."""
        if self.is_local:
            os.replace(self.path, target.path)
            _fsync_path(Path(target.path).parent)
        else:
            self.fs.move(self.path, target.path)

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path)

    def delete_tree(self) -> None:
        """Remove this folder and everything in it (nothing happens if it is not there)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir(self.path)

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


_SECRET_WORDS = r"(?:key|secret|token|password|credential|session|signature)"
_SECRET_NAME = re.compile(rf"(?i){_SECRET_WORDS}")
_SECRET_QUERY = re.compile(rf"(?i)([?&][^=&\s]*{_SECRET_WORDS}[^=&\s]*=)[^&\s'\"]*")
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]+@")


def redact(text: str) -> str:
    """``text`` with the credentials a URI can carry (``user:secret@``, ``?secret_key=...``) replaced by ``***``.

    The one rule for every URI a search records (``search.json``: output, warm starts, data, the command line;
    error messages): whoever can read the results must not read a secret there.
    """
    if "://" not in text:
        return text
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def redact_all(value):
    """``value`` (JSON-like: dicts, lists, strings) with :func:`redact` applied to every string in it."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_all(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_all(item) for item in value]
    return value


def replace_durably(tmp: Path, target: Path) -> None:
    """Rename the file or folder ``tmp`` onto ``target`` after flushing it to disk, then flush the folder.

    Every tmp+rename of the package goes through here: without the ``fsync``s a power cut after the
    rename can leave ``target`` empty or holding a folder of empty files.
    """
    _fsync_tree(tmp)
    os.replace(tmp, target)
    _fsync_path(target.parent)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                _fsync_path(child)
    _fsync_path(path)


def _fsync_path(path: Path) -> None:
    """``fsync`` a file or folder (a folder's entry list: what makes a rename durable); best effort where the
    filesystem cannot (some network filesystems refuse ``fsync`` on a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def private_temp_root() -> Path:
    """``<tmp>/tune_tl-<uid>``: this user's folder for the local mirrors of an object-store search.

    Its name must be the same on every node and in every run (pickled paths point into it), so it cannot be a
    random ``mkdtemp``; instead it is per user and mode 0700, and one that another user owns or can write is
    refused.
    """
    root = Path(tempfile.gettempdir()) / f"tune_tl-{os.getuid()}"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(root)
    except OSError as exc:
        raise TuneTLError(f"cannot make the private temporary folder {root} ({exc.strerror or exc}); "
                          "set TMPDIR to a folder of yours") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise TuneTLError(f"{root} is not a private folder of this user (owner, type or permissions are wrong); "
                          "remove it, or set TMPDIR to a folder of yours")
    return root


def without_secrets(uri: str) -> str:
    """``uri`` with its credentials (``user:secret@``, ``?secret_key=...``) removed: what is pickled and rebuilt."""
    parts = urllib.parse.urlsplit(uri)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if not _SECRET_NAME.search(k)]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, urllib.parse.urlencode(query), ""))


#: URI query keys pyarrow reads credentials from, and the environment variables its S3 client reads them from.
_S3_ENV = {"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY", "session_token": "AWS_SESSION_TOKEN"}


def _export_credentials(uri: str) -> None:
    """Put an ``s3://`` URI's credentials (``KEY:SECRET@``, ``?access_key=&secret_key=&session_token=``) into this
    process's environment, where pyarrow's S3 client reads them: the filesystem built from the URI without them
    (here, in the Ray workers this process starts, after unpickling) finds them there."""
    parts = urllib.parse.urlsplit(uri)
    given = dict(urllib.parse.parse_qsl(parts.query))
    if parts.username is not None:
        given.setdefault("access_key", urllib.parse.unquote(parts.username))
        given.setdefault("secret_key", urllib.parse.unquote(parts.password or ""))
    for key, variable in _S3_ENV.items():
        if given.get(key):
            os.environ[variable] = given[key]


@lru_cache(maxsize=32)
def _filesystem(uri: str) -> pafs.FileSystem:
    return pafs.FileSystem.from_uri(uri)[0]


class _Rebuilt(pafs.FileSystemHandler):
    """A remote filesystem that pickles as its URI without secrets (see the module docstring)."""

    def __init__(self, uri: str, fs: pafs.FileSystem | None = None):
        self.uri, self._fs = uri, fs

    def __reduce__(self):
        return _Rebuilt, (self.uri,)

    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            self._fs = _filesystem(self.uri)
        return self._fs

    def __eq__(self, other) -> bool:
        return isinstance(other, _Rebuilt) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __ne__(self, other) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return f"tune_tl+{self.fs.type_name}"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.fs.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path, metadata=metadata)
