"""``tune-tl dashboard DIR``: the search's Optuna study in optuna-dashboard, on this machine only.

The study is ``<search>/optuna.db`` (SQLite; see ``tune_tl.search.sampler``). The dashboard never opens it:
optuna-dashboard can edit and delete trials, so it serves a snapshot copy in a private temporary folder
(SQLite's backup API, consistent even while a search writes; for an object store, a copy downloaded now).
It shows the study as of that moment and does not follow a running search; edits made in the dashboard
change only the copy, which is removed when it stops.

    >>> serve_dashboard("results/demo", port=8080)   # doctest: +SKIP
    optuna-dashboard for study 'demo': http://127.0.0.1:8080/dashboard/studies/1  (Ctrl-C stops it)
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

import optuna

from tune_tl.errors import TuneTLError
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location

HOST = "127.0.0.1"  # the dashboard can edit the study: never listen beyond this machine
INSTALL_HINT = "pip install 'tune-tl[dashboard]'"
log = logging.getLogger(__name__)


def serve_dashboard(path: str | Path, port: int = 8080, on_ready: Callable[[str], None] = log.warning) -> None:
    """Serve the dashboard until interrupted (blocks); ``on_ready`` gets the line with its URL first (the CLI prints it)."""
    try:
        import optuna_dashboard
    except ImportError:
        raise TuneTLError(f"tune-tl dashboard needs optuna-dashboard, which is not installed: {INSTALL_HINT}") from None
    root = Location.parse(path)
    with tempfile.TemporaryDirectory(prefix="tune_tl-dashboard-") as tmp:
        storage = f"sqlite:///{study_copy(root, Path(tmp))}"
        url = f"http://{HOST}:{port}/dashboard/"
        study_id = _study_id(storage, root.name)
        if study_id is not None:
            url += f"studies/{study_id}"
        on_ready(f"optuna-dashboard for study {root.name!r}: {url}  (Ctrl-C stops it)")
        try:
            optuna_dashboard.run_server(storage, host=HOST, port=port)
        except KeyboardInterrupt:
            pass
        except OSError as exc:  # e.g. the port is taken
            raise TuneTLError(f"cannot serve the dashboard on {HOST}:{port} ({exc}); choose another --port") from exc


def study_copy(root: Location, tmp: Path) -> Path:
    """A snapshot copy of the study's SQLite file in ``tmp`` (never the search's own file)."""
    study = SearchRun(root).study_location
    missing = f"{study} not found: DIR must be a search folder (<output>/<name>) with an Optuna study"
    local = tmp / study.name
    if root.is_local:
        if not study.is_file():
            raise TuneTLError(missing)
        source = sqlite3.connect(f"file:{study.local_path}?mode=ro", uri=True)  # read-only: the search's file is never written
        target = sqlite3.connect(local)
        try:
            source.backup(target)
        except sqlite3.DatabaseError as exc:
            raise TuneTLError(f"{study}: not a readable Optuna study ({exc})") from None
        finally:
            source.close()
            target.close()
        return local
    if not study.download(local):
        raise TuneTLError(missing)
    return local


def _study_id(storage: str, name: str) -> int | None:
    try:
        return optuna.storages.RDBStorage(storage).get_study_id_from_name(name)
    except KeyError:  # no study of that name (a renamed folder): the dashboard's study list is still served
        log.info("no study named %r in %s; the dashboard lists the studies it holds", name, storage)
        return None
