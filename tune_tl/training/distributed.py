"""Data-parallel training: one trial, N worker processes, each batch split between them.

A trial with ``--workers-per-trial N`` (or ``--gpus-per-trial N`` > 1) starts N processes of its own
(``run_workers``); they join a ``torch.distributed`` group (NCCL with one GPU each, gloo on CPU) and
run the same ``fit`` with a :class:`Shard`: every worker draws the same global batches (same seed,
same order) and trains on its slice of each, and the gradients are averaged across workers during
``backward``, before the optimizer steps, as DistributedDataParallel does. So every worker holds the
same weights after every step; worker 0 sends each epoch's metrics and training state to the trial,
which reports and checkpoints them exactly as a one-worker trial does.

Why not ``DistributedDataParallel`` around the model: ``fit`` changes which parameters train in the
middle of a run (linear probe, then fine-tune) and trains the head alone on cached backbone features
(``model.head(x)``), and DDP's wrapper sees neither without being rebuilt. The same all-reduce, queued
from a gradient hook on the head's output, covers both. As in DDP without SyncBatchNorm, BatchNorm statistics
are each worker's own; the checkpoint holds worker 0's.

    >>> shard = Shard(rank=0, world_size=2)
    >>> [b.tolist() for b in shard.local([np.arange(8)])]
    [[0, 1, 2, 3]]
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


class Shard:
    """This worker's place in a data-parallel group: which part of each batch, and the gradient all-reduce.

    ``fit`` uses it through ``FitConfig.shard`` (``None``: one worker, nothing changes).
    """

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def local(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """This worker's slice of each global batch. Batches too small to give every worker two images
        (BatchNorm cannot train on one) are dropped by every worker alike."""
        return [np.array_split(b, self.world_size)[self.rank] for b in batches if len(b) >= 2 * self.world_size]

    def mean_loss(self, total: float, seen: int) -> float:
        """The epoch's training loss over all workers' images (each worker sees the same number)."""
        if self.world_size == 1:
            return total / max(seen, 1)
        sums = torch.tensor([total, float(seen)], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(sums)
        return float(sums[0] / max(float(sums[1]), 1.0))

    def average_gradients(self, model: torch.nn.Module) -> None:
        """Average every gradient across workers at the end of each ``backward`` through ``model``.

        A forward hook on the model's head (which every training forward ends in, the backbone's or
        the cached features' path alike) marks its output; when ``backward`` reaches it, one
        all-reduce of all gradients (flattened per dtype, like DDP's buckets) is queued to run as the
        pass ends. Whatever trains then is averaged, so parameters that start training later (LP→FT)
        are covered too.
        """
        if self.world_size == 1:
            return
        params = list(model.parameters())

        def reduce_all() -> None:
            grads = [p.grad for p in params if p.grad is not None]
            for dtype in {g.dtype for g in grads}:
                same = [g for g in grads if g.dtype == dtype]
                flat = torch.cat([g.reshape(-1) for g in same])
                dist.all_reduce(flat)
                flat /= self.world_size
                offset = 0
                for g in same:
                    g.copy_(flat[offset : offset + g.numel()].view_as(g))
                    offset += g.numel()

        def on_backward(grad: torch.Tensor) -> None:
            torch.autograd.Variable._execution_engine.queue_callback(reduce_all)

        def on_forward(_module, _inputs, output) -> None:
            if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(on_backward)

        getattr(model, "head", model).register_forward_hook(on_forward)


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


@dataclass
class Link:
    """What a worker process gets: its rank, the group size, its device, and a line to the trial."""

    rank: int
    world_size: int
    device: str
    conn: Connection

    def send(self, kind: str, payload: Any = None, wait_for_ack: bool = False) -> None:
        """Send ``(kind, payload)`` to the trial; with ``wait_for_ack``, block until the trial has handled it
        (an epoch report: the trial may decide to stop, and no worker runs ahead of that decision)."""
        # Plain pickle: torch's multiprocessing pickler would pass tensors as shared-memory handles,
        # which die with this process; a copy in the message does not.
        self.conn.send_bytes(pickle.dumps((kind, payload, wait_for_ack)))
        if wait_for_ack:
            self.conn.recv()


#: Seconds a worker that said it was done gets to tear its process group down and exit before it is killed.
GRACE_S = 10.0


class WorkerFailed(RuntimeError):
    """A data-parallel worker raised or died; the trial fails and Ray retries it from its last checkpoint."""


def run_workers(world_size: int, target: Callable[[Link, Any], None], job: Any, on_message: Callable[[str, Any], None],
                use_gpus: bool = False) -> None:
    """Run ``target(link, job)`` in ``world_size`` new processes joined in one process group.

    ``on_message(kind, payload)`` runs here, in the calling process, for every message a worker sends;
    an ``"error"`` message raises :class:`WorkerFailed`, and an ``"oom"`` message ends the run. Returns
    when every worker has said it is done (its target returned) or exited normally. Whatever way this
    function is left (a stopped trial raises out of ``on_message``), every worker is terminated (one that
    said it was done gets ``GRACE_S`` to leave on its own); a worker also dies with the thread that started
    it (``PR_SET_PDEATHSIG``).
    """
    ctx = torch.multiprocessing.get_context("spawn")  # fork is unsafe in a threaded Ray worker
    with tempfile.TemporaryDirectory(prefix="tune_tl-ddp-") as tmp:
        store = os.path.join(tmp, "store")
        procs, conns, done = [], {}, set()
        try:
            for rank in range(world_size):
                ours, theirs = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=_bootstrap, args=(rank, world_size, store, use_gpus, target, job, theirs), daemon=True)
                proc.start()
                theirs.close()
                procs.append(proc)
                conns[ours] = rank
            done = _serve(procs, conns, on_message)
        finally:
            for rank, proc in enumerate(procs):
                if rank in done:  # a moment to tear its process group down and leave on its own
                    proc.join(timeout=GRACE_S)
                if proc.is_alive():
                    proc.kill()
                proc.join(timeout=30)


def _serve(procs, conns: dict, on_message) -> set[int]:
    """Hand every worker's messages to ``on_message`` until each has said it is done or exited; the ranks done."""
    open_conns, done = dict(conns), set()
    while open_conns:
        for ready in wait(list(open_conns)):
            rank = open_conns[ready]
            try:
                kind, payload, needs_ack = pickle.loads(ready.recv_bytes())
            except EOFError:  # the worker has exited before saying it was done: normally, or not (checked below)
                open_conns.pop(ready)
                procs[rank].join(timeout=60)
                if procs[rank].exitcode != 0:
                    raise WorkerFailed(f"data-parallel worker {rank} exited with code {procs[rank].exitcode}") from None
                continue
            if kind == "done":  # its work is over and reported: how its process tears gloo down no longer matters
                done.add(open_conns.pop(ready))
                continue
            if kind == "error":
                raise WorkerFailed(f"data-parallel worker {rank}: {payload}")
            on_message(kind, payload)
            if kind == "oom":  # the trial ends; the other workers may wait in a collective forever
                return done
            if needs_ack:
                ready.send(True)
    return done


def _bootstrap(rank: int, world_size: int, store: str, use_gpus: bool, target, job, conn: Connection) -> None:
    _die_with_parent()
    if use_gpus:
        torch.cuda.set_device(rank)  # the trial's GPUs (Ray's CUDA_VISIBLE_DEVICES), one per worker
    device = f"cuda:{rank}" if use_gpus else "cpu"
    link = Link(rank, world_size, device, conn)
    dist.init_process_group("nccl" if use_gpus else "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        target(link, job)
    except BaseException as exc:  # noqa: BLE001 - reported to the trial, then the worker exits non-zero
        log.error("data-parallel worker %d failed:\n%s", rank, traceback.format_exc())
        link.send("error", f"{type(exc).__name__}: {exc}"[:2000])
        raise SystemExit(1) from None
    else:
        # Done before the group's teardown: gloo aborted a worker that had finished its work ("terminate called without
        # an active exception", exit -6) in about 1 of 30 runs of tests/test_distributed.py under load, with or without a
        # barrier before destroy_process_group. The trial has every result by now and does not wait on what follows.
        link.send("done")
    finally:
        conn.close()
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the thread that started it ends, even by SIGKILL."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
