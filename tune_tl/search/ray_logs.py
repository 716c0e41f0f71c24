"""Ray's and Optuna's own log lines go to ``<search>/logs/ray.log`` while a search runs (unless ``--verbose``).

A person following a search reads the progress view (``search.progress``); Ray's lines are for whoever
debugs Ray. :func:`ray_output` routes the ``ray`` and ``optuna`` loggers, and the few Python warnings Ray
raises about its own internals, into that file for the duration of a search, from the moment the search
folder holds a search: before that (while a new search's checks run) they wait in memory, so a refused
search writes nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location

log = logging.getLogger(__name__)

#: Loggers whose lines are for whoever debugs Ray, not for the user following a search.
ROUTED_LOGGERS = ("ray", "optuna")
AIR_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
#: Python warnings from Ray that are about Ray's internals, not the user's search: sent to ray.log.
#: (OptunaSearch times the sampler together with the define-by-run function; SQLite writes on a busy disk pass 1 s.)
RAY_WARNINGS = ("Define-by-run function passed in the `space` argument took",)
#: Log records held while a search's checks run (before its folder exists); more are dropped.
MAX_WAITING = 10_000


@contextmanager
def ray_output(root: Location, verbose: int):
    """While Ray runs, send the ``ray`` and ``optuna`` loggers to ``<search>/logs/ray.log`` (unless
    ``verbose``). An object-store search writes the file on this machine and uploads it at the end."""
    if verbose:
        yield None
        return
    run = SearchRun(root)
    file = run.ray_log_file()
    # Nothing is written until the search exists: a search refused for bad input leaves its --output as it was.
    handler = _LazyFileHandler(file, ready=run.metadata_file.is_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Ray's new output engine prints its experiment box and paths even at verbose=0; the legacy one is silent.
    saved_env = os.environ.get(AIR_OUTPUT_ENV)
    os.environ[AIR_OUTPUT_ENV] = "0"
    saved = {}
    for name in ROUTED_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate)
        logger.handlers, logger.propagate = [handler], False
    show = warnings.showwarning
    warnings.showwarning = functools.partial(_show_warning, show)
    try:
        yield file
    finally:
        warnings.showwarning = show
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        handler.close()
        if saved_env is None:
            os.environ.pop(AIR_OUTPUT_ENV, None)
        else:
            os.environ[AIR_OUTPUT_ENV] = saved_env
        if not root.is_local and file.is_file():
            try:
                run.ray_log_location.upload(file)
            except OSError as exc:  # a log must never fail a finished search
                log.warning("could not upload %s: %s", file, exc)


class _LazyFileHandler(logging.FileHandler):
    """A file handler that holds its records in memory until ``ready()`` (the search folder holds a search), then
    writes them and everything after to its file."""

    def __init__(self, filename, ready: Callable[[], bool], encoding: str | None = None):
        super().__init__(filename, encoding=encoding, delay=True)
        self._ready, self._waiting = ready, []

    def emit(self, record):
        if self.stream is None and not self._ready():
            if len(self._waiting) < MAX_WAITING:
                self._waiting.append(record)
            return
        waiting, self._waiting = self._waiting, []
        for earlier in waiting:
            super().emit(earlier)
        super().emit(record)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _show_warning(show, message, category, filename, lineno, file=None, line=None):
    if any(str(message).startswith(text) for text in RAY_WARNINGS):
        logging.getLogger("ray").warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)
    else:
        show(message, category, filename, lineno, file, line)
