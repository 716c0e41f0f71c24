"""What a person sees while a search runs: a live view on a terminal, one plain line per trial elsewhere.

:class:`SearchProgress` is a driver-side Ray Tune callback. On a terminal it keeps a small rich view
up to date in place (trials done / running / pruned / diverged, the best trial so far with its
config, elapsed and remaining time, epochs per second) and prints one line above it per finished
trial. Anywhere else (CI, ``| tee``, a log file) it prints only those per-trial lines: nothing that
redraws. Ray's own reporting is off (``RunConfig(verbose=0)``) and ``search.ray_logs`` sends Ray's
log lines to ``<search>/logs/ray.log``; ``tune-tl search --verbose`` keeps Ray's stream instead.
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import Any

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tune_tl.store.ranking import RANKED_STATUSES, best_of, best_row
from tune_tl.store.schema import STATUSES
from tune_tl.store.search_run import SearchRun
from tune_tl.store.storage import Location
from tune_tl.store.trial_record import TrialRecord, is_epoch_result, raised_error


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
        self._counts = dict.fromkeys(STATUSES, 0)
        self._best: dict | None = None  # the best row among the trials that ended before this driver (probes, a resume)
        self._unranked: set[str] = set()  # diverged, failed: their accuracies are not comparable
        self._configs: dict[str, dict] = {}
        self._records: dict[str, TrialRecord] = {}
        self._running: list[str] = []
        self._epochs = 0
        self._done_before: set[str] = set()  # a resumed search's trials that ended before (Ray may end them again)

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
        console = Console()
        if self.live and console.is_terminal:
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
            is_epoch = is_epoch_result(result)
            if self._records.setdefault(trial.trial_id, TrialRecord()).add_result(result) and is_epoch:
                self._epochs += 1

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finished(trial, raised=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finished(trial, raised=raised_error(trial))

    def on_experiment_end(self, trials, **info):
        self._stop()

    # -- internals
    def _finished(self, trial, raised: str | None) -> None:
        if trial.trial_id in self._done_before:
            return  # counted from the Parquet results already; a resume ends it again without training it
        with self._lock:
            self._configs.setdefault(trial.trial_id, dict(trial.config))
            record = self._records.setdefault(trial.trial_id, TrialRecord())
            status, error = record.verdict(self.max_epochs, raised)
            if status == "diverged":
                error = None  # the status says it; the line stays short
            self._counts[status] += 1
            if trial.trial_id in self._running:
                self._running.remove(trial.trial_id)
            if status not in RANKED_STATUSES:
                self._unranked.add(trial.trial_id)
            best = record.best
            leader = self._leader()
            is_best = best is not None and leader is not None and leader[1] == trial.trial_id
            done = sum(self._counts.values())
            line = (f"[{done}/{self.samples}] trial {trial.trial_id} {status} after {record.epochs_run}/{self.max_epochs} epoch(s)"
                    + (f": val_acc {best[0]:.4f} (epoch {best[1]})" if best else "")
                    + (" - best so far" if is_best else "")
                    + (f"; {error[:300]}" if error else "")
                    + "; " + _config_text(self._configs[trial.trial_id], self._varying()))
        self._print(line)

    def _print(self, line: str) -> None:
        if self._live is not None:
            self._live.console.print(Text(line))  # above the live view; wrapped, so the whole config shows
        else:
            print(line, flush=True)

    def _stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _load_finished(self) -> None:
        """Counts and best trial of a resumed search, from what the Parquet results already hold."""
        trials = SearchRun(self.root).trials()  # empty for a new search; its probes count as the best so far only
        self._done_before = set(trials["trial_id"])
        for status, n in trials.loc[~trials["probe"].eq(True), "status"].value_counts().items():
            self._counts[status] = int(n)
        best = best_row(trials)
        if best is not None:
            self._best = {k: best[k] for k in ("trial_id", "best_val_acc", "epochs_run", "best_epoch")}

    def _leader(self) -> tuple[float, str, int] | None:
        """(val_acc, trial_id, epoch) of the best trial so far, among trials that did not diverge or fail, in the
        leaderboard's order (``store.ranking``: running trials count with the epochs they have run)."""
        rows = [self._best] if self._best is not None else []
        for trial_id, record in self._records.items():
            if trial_id not in self._unranked and record.best is not None:
                acc, epoch = record.best
                rows.append({"trial_id": trial_id, "best_val_acc": acc, "epochs_run": record.epochs_run, "best_epoch": epoch})
        best = best_of(rows)
        return None if best is None else (float(best["best_val_acc"]), str(best["trial_id"]), int(best["best_epoch"]))

    def _varying(self) -> list[str] | None:
        """Config keys whose values differ between the trials seen so far (None: show every key)."""
        configs = list(self._configs.values())
        if len(configs) < 2:
            return None
        keys = dict.fromkeys(k for c in configs for k in c)
        return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]

    def _render(self):
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
            running = [f"{t} epoch {self._records[t].epochs_run}/{self.max_epochs}" if t in self._records and self._records[t].history
                       else f"{t} starting" for t in self._running]
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
