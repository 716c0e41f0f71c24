"""What a person sees while a search runs: a live view on a terminal, one plain line per trial elsewhere.

:class:`SearchProgress` is a driver-side Ray Tune callback. On a terminal it keeps a small rich view
up to date in place (trials done / running / pruned / diverged, the best trial so far with its
config, elapsed and remaining time, epochs per second) and prints one line above it per finished
trial. Anywhere else (CI, ``| tee``, a log file) it prints only those per-trial lines: nothing that
redraws. Ray's own reporting is off (``RunConfig(verbose=0)``) and :func:`ray_output` sends Ray's
(and Optuna's) log lines to ``<search>/logs/ray.log``; ``tune-tl search --verbose`` keeps today's
stream instead.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import os
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.tune import Callback

from tune_tl.store.storage import Location

LOG_FILE = "ray.log"  # in <search>/logs/
#: Loggers whose lines are for whoever debugs Ray, not for the user following a search.
ROUTED_LOGGERS = ("ray", "optuna")
AIR_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
#: Python warnings from Ray that are about Ray's internals, not the user's search: sent to ray.log.
#: (OptunaSearch times the sampler together with the define-by-run function; SQLite writes on a busy disk pass 1 s.)
RAY_WARNINGS = ("Define-by-run function passed in the `space` argument took",)


def trial_name(trial) -> str:
    """Ray's name and folder for a trial: its id (``4c1e2a1b``), which is also the Parquet ``trial_id``."""
    return trial.trial_id


@contextmanager
def ray_output(root: Location, verbose: int):
    """While Ray runs, send the ``ray`` and ``optuna`` loggers to ``<search>/logs/ray.log`` (unless
    ``verbose``). An object-store search writes the file on this machine and uploads it at the end."""
    if verbose:
        yield None
        return
    folder = root.local_path / "logs" if root.is_local else root.local_mirror("logs")
    file = folder / LOG_FILE
    handler = _LazyFileHandler(file, encoding="utf-8", delay=True)  # a search that fails on bad input leaves no file
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
                (root / "logs" / LOG_FILE).upload(file)
            except OSError as exc:  # a log must never fail a finished search
                logging.getLogger(__name__).warning("could not upload %s: %s", file, exc)


class _LazyFileHandler(logging.FileHandler):
    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _show_warning(show, message, category, filename, lineno, file=None, line=None):
    if any(str(message).startswith(text) for text in RAY_WARNINGS):
        logging.getLogger("ray").warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)
    else:
        show(message, category, filename, lineno, file, line)


class SearchProgress(Callback):
    """Driver-side view of a running search; see the module docstring.

    Picklable (Ray stores callbacks with the experiment): the console and the live view are made in
    ``setup``. On a resumed search the trials finished before are read back from the Parquet results.
    """

    def __init__(self, root: Location, samples: int, max_epochs: int, time_budget: Any = None, live: bool = True):
        self.root, self.samples, self.max_epochs = root, samples, max_epochs
        self.time_budget = _seconds(time_budget)
        self.live = live
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._live = None
        self._start = time.monotonic()
        self._counts = {status: 0 for status in ("completed", "pruned", "diverged", "oom", "error")}
        self._best: tuple[float, str, int] | None = None  # (val_acc, trial_id, epoch) of a resumed search's trials
        self._unranked: set[str] = set()  # diverged, failed: their accuracies are not comparable
        self._configs: dict[str, dict] = {}
        self._history: dict[str, list[tuple[int, float, bool]]] = {}  # trial -> [(epoch, val_acc, diverged)]
        self._verdict: dict[str, str] = {}  # the trainable's own status (oom)
        self._errors: dict[str, str] = {}  # and its error text
        self._running: list[str] = []
        self._epochs = 0

    def __getstate__(self):
        return {k: self.__dict__[k] for k in ("root", "samples", "max_epochs", "time_budget", "live")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    # -- Ray Tune hooks
    def setup(self, total_num_samples: int | None = None, **info):
        self._reset()
        if total_num_samples and total_num_samples > 0:
            self.samples = total_num_samples  # a resumed search may have been extended
        self._load_finished()
        from rich.console import Console

        console = Console()
        if self.live and console.is_terminal:
            from rich.live import Live

            self._live = Live(console=console, get_renderable=self._render, refresh_per_second=2)
            self._live.start()
            atexit.register(self._stop)

    def on_trial_start(self, iteration, trials, trial, **info):
        with self._lock:
            self._configs[trial.trial_id] = dict(trial.config)

    def on_step_end(self, iteration, trials, **info):
        with self._lock:
            self._running = [t.trial_id for t in trials if t.status == "RUNNING"]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        with self._lock:
            self._configs[trial.trial_id] = dict(trial.config)
            if "trial_status" in result:
                self._verdict[trial.trial_id] = result["trial_status"]
                self._errors[trial.trial_id] = str(result.get("error") or "")[:300]
                return
            if result.get("epoch") is None:
                return
            epoch, acc = int(result["epoch"]), _finite(result.get("val_acc"))
            self._history.setdefault(trial.trial_id, []).append((epoch, acc, bool(result.get("diverged"))))
            self._epochs += 1

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finished(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finished(trial, error=_error_line(trial))

    def on_experiment_end(self, trials, **info):
        self._stop()

    # -- internals
    def _finished(self, trial, error: str | None) -> None:
        with self._lock:
            self._configs.setdefault(trial.trial_id, dict(trial.config))
            history = sorted(self._history.get(trial.trial_id, []))
            epochs_run = max((e for e, _, _ in history), default=0)
            if error is not None:
                status = "error"
            elif trial.trial_id in self._verdict:
                status, error = self._verdict[trial.trial_id], self._errors.get(trial.trial_id) or None
            elif history and history[-1][2]:
                status = "diverged"
            else:
                status = "completed" if epochs_run >= self.max_epochs else "pruned"
            self._counts[status] = self._counts.get(status, 0) + 1
            if trial.trial_id in self._running:
                self._running.remove(trial.trial_id)
            if status not in ("completed", "pruned"):
                self._unranked.add(trial.trial_id)
            accs = [(a, e) for e, a, _ in history if a is not None]
            best = max(accs) if accs else None
            leader = self._leader()
            is_best = best is not None and leader is not None and leader[1] == trial.trial_id
            done = sum(self._counts.values())
            line = (f"[{done}/{self.samples}] trial {trial.trial_id} {status} after {epochs_run}/{self.max_epochs} epoch(s)"
                    + (f": val_acc {best[0]:.4f} (epoch {best[1]})" if best else "")
                    + (" - best so far" if is_best else "")
                    + (f"; {error}" if error else "")
                    + "; " + _config_text(self._configs[trial.trial_id], self._varying()))
        self._print(line)

    def _print(self, line: str) -> None:
        if self._live is not None:
            from rich.text import Text

            self._live.console.print(Text(line))  # above the live view; wrapped, so the whole config shows
        else:
            print(line, flush=True)

    def _stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _load_finished(self) -> None:
        """Counts and best trial of a resumed search, from what the Parquet results already hold."""
        try:
            from tune_tl.analysis.frame import load_results

            trials = load_results(self.root).trials
        except Exception:  # a new search (nothing written yet) or unreadable results: start from zero
            return
        for status, n in trials["status"].value_counts().items():
            self._counts[status] = int(n)
        ok = trials[trials["best_val_acc"].notna()]
        if len(ok):
            row = ok.loc[ok["best_val_acc"].idxmax()]
            self._best = (float(row["best_val_acc"]), str(row["trial_id"]), int(row["best_epoch"]))

    def _leader(self) -> tuple[float, str, int] | None:
        """(val_acc, trial_id, epoch) of the best epoch so far, among trials that did not diverge or fail."""
        best = self._best
        for trial_id, history in self._history.items():
            if trial_id in self._unranked:
                continue
            for epoch, acc, _ in history:
                if acc is not None and (best is None or acc > best[0]):
                    best = (acc, trial_id, epoch)
        return best

    def _varying(self) -> list[str] | None:
        """Config keys whose values differ between the trials seen so far (None: show every key)."""
        configs = list(self._configs.values())
        if len(configs) < 2:
            return None
        keys = dict.fromkeys(k for c in configs for k in c)
        return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]

    def _render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            done, c = sum(self._counts.values()), self._counts
            elapsed = time.monotonic() - self._start
            head = Table.grid(padding=(0, 1))
            head.add_row(Text(f"search {self.root.name}", style="bold"), ProgressBar(total=max(self.samples, 1), completed=done, width=30),
                         Text(f"{done}/{self.samples} trials, {len(self._running)} running"))
            lines = [head, Text(f"  done: {c['completed']} completed, {c['pruned']} pruned, {c['diverged']} diverged, "
                                f"{c.get('oom', 0)} out of memory, {c['error']} failed"),
                     Text(f"  time: {_clock(elapsed)} elapsed, {self._remaining(elapsed, done)}, "
                          f"{self._epochs / elapsed if elapsed > 0 else 0:.2f} epochs/s")]
            leader = self._leader()
            if leader is not None:
                acc, trial_id, epoch = leader
                config = self._configs.get(trial_id)
                lines.append(Text(f"  best: val_acc {acc:.4f}, trial {trial_id} epoch {epoch}"
                                  + (f": {_config_text(config, self._varying())}" if config else ""), no_wrap=True, overflow="ellipsis"))
            running = [f"{t} epoch {self._history[t][-1][0]}/{self.max_epochs}" if self._history.get(t) else f"{t} starting"
                       for t in self._running]
            if running:
                lines.append(Text("  running: " + ", ".join(running), no_wrap=True, overflow="ellipsis"))
        return Group(*lines)

    def _remaining(self, elapsed: float, done: int) -> str:
        if self.time_budget is not None:
            return f"{_clock(max(0.0, self.time_budget - elapsed))} left of the time budget"
        if done == 0 or done >= self.samples:
            return "remaining time after the first trial" if done == 0 else "all trials done"
        return f"~{_clock(elapsed / done * (self.samples - done))} left"


def _config_text(config: dict, keys: list[str] | None) -> str:
    shown = [k for k in (keys if keys is not None else config) if k in config]
    return ", ".join(f"{k}={_fmt(config[k])}" for k in shown) or "(same config as the others)"


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _finite(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _seconds(budget: Any) -> float | None:
    """A time budget as seconds: a number, a ``timedelta``, or None (no budget)."""
    if budget is None:
        return None
    if hasattr(budget, "total_seconds"):
        return float(budget.total_seconds())
    try:
        return float(budget)
    except (TypeError, ValueError):
        return None


def _error_line(trial) -> str:
    """The last line of the trial's error file (the exception), without Ray's traceback."""
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "unknown error"
