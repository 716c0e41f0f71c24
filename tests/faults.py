"""Helpers for tests that really kill processes: a search driver in its own session with its own Ray.

Every process of a ``Driver``'s search imports ``tests/fault_injection/sitecustomize.py`` at start-up
(it is first on their ``PYTHONPATH``): with ``fault_dir`` given, trials leave their pids and start
epochs there, and ``at=MOMENT`` stops the search at that moment for the test to kill it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import torch

REPO = Path(__file__).resolve().parents[1]
DIR_ENV, AT_ENV = "TUNE_TL_FAULT_DIR", "TUNE_TL_FAULT_AT"  # as tests/fault_injection/sitecustomize.py reads them


class Driver:
    """``python -m tune_tl.cli ARGS`` in a new process group with a private Ray temp dir.

    Ray's head processes (gcs_server, raylet, workers) are started by the driver; after a SIGKILL
    of the driver they can outlive it, so ``kill`` also ends every process whose command line
    names this driver's private temp dir (and only those).
    """

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, fault_dir: Path | None = None,
                 at: str | None = None):
        self.ray_tmp = tempfile.mkdtemp(prefix="ttl", dir="/tmp")  # short: Ray's socket paths have a limit
        full_env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", AT_ENV, DIR_ENV)}
        full_env.update(PYTHONPATH=f"{REPO / 'tests' / 'fault_injection'}{os.pathsep}{REPO}", RAY_TMPDIR=self.ray_tmp, **(env or {}))
        self.fault_dir = fault_dir
        if fault_dir is not None:
            fault_dir.mkdir(parents=True, exist_ok=True)
            (fault_dir / "reached").unlink(missing_ok=True)
            full_env[DIR_ENV] = str(fault_dir)
        if at is not None:
            full_env[AT_ENV] = at
        self.log = log
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "tune_tl.cli", *args], cwd=REPO, env=full_env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def wait_for(self, condition, timeout: float, poll: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"driver exited early ({self.proc.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting; driver log:\n{self.tail()}")
            time.sleep(poll)

    def wait_for_moment(self, timeout: float) -> str:
        """Wait until a process of the search stops at its armed moment (``at``); the marker's text."""
        marker = self.fault_dir / "reached"
        self.wait_for(marker.exists, timeout, poll=0.1)
        time.sleep(0.05)  # the marker is written in one call; let it land
        return marker.read_text()

    def kill(self) -> None:
        """SIGKILL the driver's process group, then any Ray process of its private temp dir."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for _ in range(20):
            left = _processes_mentioning(self.ray_tmp)
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.25)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text()[-n:] if self.log.exists() else ""


def assert_every_file_readable(root: Path, checkpoints: bool = True) -> None:
    """Every Parquet part of the search reads (and, with ``checkpoints``, every checkpoint's state loads)."""
    for part in list(root.glob("epochs/*.parquet")) + list(root.glob("trials/*.parquet")):
        pq.read_table(part)
    for ckpt in root.glob("*/checkpoint_*/state.pt") if checkpoints else []:
        torch.load(ckpt, weights_only=True)


def assert_one_row_per_trial_and_epoch(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials, epochs = pd.read_parquet(root / "trials"), pd.read_parquet(root / "epochs")
    assert trials["trial_id"].is_unique
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    runs = epochs.groupby("trial_id")["epoch"].agg(["count", "max"])
    assert runs["count"].to_dict() == trials.set_index("trial_id")["epochs_run"].to_dict()
    assert (runs["count"] == runs["max"]).all(), "epochs are 1..epochs_run without gaps"
    return trials, epochs


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline or f"RAY_TMPDIR={text}" in environ:
            pids.append(int(entry.name))
    return pids
