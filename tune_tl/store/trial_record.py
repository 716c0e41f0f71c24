"""One trial as the driver hears it, and the one rule for how it ended (its ``status``).

The Parquet sink, the progress view and the Optuna bridge each follow every trial's results; they all
keep a :class:`TrialRecord` and ask it for :meth:`TrialRecord.verdict`, so the trials table, the terminal
and the study can never disagree on whether a trial completed, was pruned, diverged, ran out of memory or
failed.

    >>> record = TrialRecord()
    >>> record.add_epoch(1, 0.91, diverged=False), record.add_epoch(1, 0.91, diverged=False)
    (True, False)
    >>> record.verdict(max_epochs=3)
    ('pruned', None)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The statuses the trainable itself reports in a final result (``trial_status``) rather than as an epoch.
REPORTED_STATUSES = ("oom", "error")


@dataclass
class TrialRecord:
    """Epochs heard so far ``(epoch, val_acc or None, diverged)`` and the trainable's own verdict, if any."""

    history: list[tuple[int, float | None, bool]] = field(default_factory=list)
    reported: str | None = None  # oom | error, from a final result's trial_status
    reported_error: str | None = None

    def add_epoch(self, epoch: int, val_acc, diverged: bool) -> bool:
        """Record an epoch's result; ``False`` (nothing recorded) when this epoch was heard before (a retried trial)."""
        if any(e == epoch for e, _, _ in self.history):
            return False
        acc = float(val_acc) if isinstance(val_acc, (int, float)) and math.isfinite(val_acc) else None
        self.history.append((int(epoch), acc, bool(diverged)))
        self.history.sort()
        return True

    def add_result(self, result: dict) -> bool:
        """Record a Ray result: the trainable's verdict (``trial_status``) or an epoch; ``True`` if it was news."""
        if result.get("trial_status") in REPORTED_STATUSES:
            self.reported, self.reported_error = result["trial_status"], result.get("error")
            return True
        if not is_epoch_result(result):
            return False
        return self.add_epoch(int(result["epoch"]), result.get("val_acc"), bool(result.get("diverged", False)))

    @property
    def epochs_run(self) -> int:
        return max((e for e, _, _ in self.history), default=0)

    @property
    def best(self) -> tuple[float, int] | None:
        """``(val_acc, epoch)`` of the best epoch (the later one on a tie), or ``None`` without a finite accuracy."""
        accs = [(acc, epoch) for epoch, acc, _ in self.history if acc is not None]
        return max(accs) if accs else None

    @property
    def last_acc(self) -> float | None:
        return self.history[-1][1] if self.history else None

    def verdict(self, max_epochs: int, raised: str | None = None) -> tuple[str, str | None]:
        """``(status, error text)``: ``error`` if the trial raised (``raised``: its message) or reported an error,
        ``oom`` if it reported running out of GPU memory, ``diverged`` if its last epoch diverged, ``completed``
        if it ran ``max_epochs``, else ``pruned`` (a scheduler or the time budget stopped it)."""
        if raised is not None:
            return "error", raised
        if self.reported is not None:
            return self.reported, self.reported_error
        if self.history and self.history[-1][2]:
            epoch = self.history[-1][0]
            return "diverged", f"training loss diverged (non-finite, or far above its first epoch's) at epoch {epoch}"
        return ("completed" if self.epochs_run >= max_epochs else "pruned"), None


def is_epoch_result(result: Mapping[str, Any], epoch_key: str = "epoch") -> bool:
    """Whether a Ray result reports an epoch (``epoch_key`` set), not the trainable's final verdict (``trial_status``)."""
    return result.get(epoch_key) is not None and "trial_status" not in result


def raised_error(trial) -> str:
    """The last line of a Ray trial's error file (the exception), without Ray's long traceback."""
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:2000] if lines else "unknown error"
