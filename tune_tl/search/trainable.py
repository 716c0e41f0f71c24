"""The Ray Tune function trainable: config → model → ``fit`` → ``tune.report`` each epoch.

The only module that calls ``tune.report``. Everything heavy (backbone weights, prepared images)
arrives through ``TrialContext``, which ``tune.with_parameters`` puts in Ray's object store once
for all trials: no trial reads a file or downloads anything (except on the streaming fallback,
where the data did not fit ``data.memory_budget_mb`` and trials decode image files per epoch).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import ray
import torch
from ray import tune

from tune_tl.config.params import TrialConfig
from tune_tl.errors import TuneTLError
from tune_tl.store.search_run import CHECKPOINT_FILE
from tune_tl.store.storage import replace_durably
from tune_tl.training.context import TrialContext
from tune_tl.training.distributed import Shard, run_workers
from tune_tl.training.loop import EpochMetrics, fit
from tune_tl.training.recipe import build_trial

log = logging.getLogger(__name__)


def run_trial(config: dict, context: TrialContext, workers: int = 1, ended: frozenset[str] = frozenset()) -> None:
    """Ray Tune entry point (wrapped by ``tune.with_parameters``).

    A configuration error (``TuneTLError`` or ``ValueError``: a bad parameter value, a config the
    model or optimizer rejects) is deterministic, so it is not raised for Ray to retry: the trial ends
    at once with a final ``trial_status="error"`` result carrying the message.

    ``ended``: trials of a resumed search whose ending the study and the Parquet tables already hold
    (``tune_tl.search.reconcile``) but Ray's older snapshot does not, so Ray restores them: they end at
    once, untrained, and nothing is reported or told twice.
    """
    if ended and tune.get_context().get_trial_id() in ended:
        # One result, as a configuration error's: Ray rejects a trial that ends without the metric. No epoch,
        # no verdict: the sink, the study and the progress view ignore it; ASHA records nothing.
        tune.report({"val_acc": float("nan"), "trial_status": "ended"})
        return
    try:
        _run_trial(config, context, workers)
    except (TuneTLError, ValueError) as exc:
        text = f"{type(exc).__name__}: {exc}".strip()[:2000]
        log.warning("trial configuration error (not retried): %s", text)
        tune.report({"val_acc": float("nan"), "trial_status": "error", "error": text})


def _run_trial(config: dict, context: TrialContext, workers: int) -> None:
    """One trial, reporting every epoch.

    Every epoch is reported together with a checkpoint of the full training state, so a trial whose
    worker dies is retried by Ray from its last epoch. Outcomes that a retry cannot fix end the trial
    normally with a final ``trial_status`` result instead of raising: divergence (``fit`` stops by
    itself) and CUDA out-of-memory (``trial_status="oom"`` plus the exception text). With ``workers``
    > 1 the same training runs in that many data-parallel processes (``_run_data_parallel``); what
    is reported, checkpointed and recorded is the same.
    """
    cfg = TrialConfig.from_dict(config)  # a bad config fails here, before any resources are touched
    device = _trial_device(workers)
    resume = _load_checkpoint(tune.get_checkpoint())
    last: dict = {}
    node = {**_node_info(), "workers": workers}

    def report(metrics: dict, folder: str) -> None:
        last.update(metrics)
        tune.report({**metrics, **node}, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        if workers > 1:
            _run_data_parallel(TrialJob(config, context, resume, device, _threads(workers)), workers, report)
            return
        plan = build_trial(cfg, context, device, _loader_workers())
        fit(plan.model, plan.split, plan.fit, param_groups=plan.param_groups, resume=resume, on_state=_saving(report))
    except torch.cuda.OutOfMemoryError as exc:
        # Not retried: the same config on the same device would run out of memory again.
        _report_oom(f"{type(exc).__name__}: {exc}", last)


def _saving(report: Callable[[dict, str], None]):
    """``fit``'s ``on_state``: save the state as a checkpoint folder, then ``report`` metrics and folder."""

    def on_state(metrics: EpochMetrics, state: dict) -> None:
        with tempfile.TemporaryDirectory(prefix="tune_tl-ckpt-") as tmp:
            _save_atomic(state, os.path.join(tmp, CHECKPOINT_FILE))
            report(dataclasses.asdict(metrics), tmp)

    return on_state


def _report_oom(text: str, last: dict) -> None:
    text = text.strip()[:2000]
    log.warning("trial ran out of GPU memory: %s", text)
    tune.report({"val_acc": last.get("val_acc", float("nan")), "trial_status": "oom", "error": text})


@dataclasses.dataclass(frozen=True)
class TrialJob:
    """What each data-parallel worker of a trial needs to build and train the trial's model.

    The workers are spawned processes, which get it through plain pickle; that pickles a function by its module's
    name, and a backbone the user registered from a script or notebook has no module a worker could import. So the
    context's user families travel cloudpickled (by value, as Ray brought them to this trial): ``for_workers``.
    """

    config: dict
    context: TrialContext
    resume: dict | None
    device: str  # "cuda" (one GPU per worker) or "cpu"
    threads: int  # torch threads per worker: the trial's CPUs shared out
    families: bytes = b""  # ``context.families``, cloudpickled (``for_workers``)

    def for_workers(self) -> TrialJob:
        """This job with its context's user families moved into ``families``."""
        return dataclasses.replace(self, context=dataclasses.replace(self.context, families=()),
                                   families=ray.cloudpickle.dumps(self.context.families))

    def in_worker(self) -> TrialContext:
        """The context, its user families back in it (in a worker, from ``for_workers``)."""
        families = ray.cloudpickle.loads(self.families) if self.families else ()
        return dataclasses.replace(self.context, families=families)


def _run_data_parallel(job: TrialJob, workers: int, report: Callable[[dict, str], None]) -> None:
    """Train in ``workers`` processes (``tune_tl.training.distributed``); report here, in the trial."""
    def on_message(kind: str, payload) -> None:
        if kind == "epoch":
            report(*payload)  # a stopped trial raises here, and run_workers ends the workers
        elif kind == "oom":
            raise torch.cuda.OutOfMemoryError(payload)

    run_workers(workers, train_worker, job.for_workers(), on_message, use_gpus=job.device == "cuda")


def train_worker(link, job: TrialJob) -> None:
    """One data-parallel worker: the trial's recipe and ``fit`` on this worker's slice of every batch.

    Worker 0 saves each epoch's state into a folder and waits until the trial has reported it.
    """
    torch.set_num_threads(job.threads)
    plan = build_trial(job.config, job.in_worker(), link.device)
    fit_cfg = dataclasses.replace(plan.fit, shard=Shard(link.rank, link.world_size))

    def send_epoch(metrics: dict, folder: str) -> None:
        link.send("epoch", (metrics, folder), wait_for_ack=True)  # the folder lives until the trial has it

    try:
        fit(plan.model, plan.split, fit_cfg, param_groups=plan.param_groups, resume=job.resume,
            on_state=_saving(send_epoch) if link.rank == 0 else None)
    except torch.cuda.OutOfMemoryError as exc:
        link.send("oom", f"{type(exc).__name__}: {exc}")


def _node_info() -> dict[str, str]:
    """Which Ray node runs this trial (recorded on every row, so cluster runs can be audited)."""
    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}


def _save_atomic(state: dict, path: str) -> None:
    """``torch.save`` under a temporary name, then rename: a crash never leaves a partial file."""
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    replace_durably(Path(tmp), Path(path))


def _load_checkpoint(checkpoint) -> dict | None:
    """The training state in Ray's checkpoint, loaded with ``weights_only=True`` (no pickle code runs)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as path:
        return torch.load(os.path.join(path, CHECKPOINT_FILE), map_location="cpu", weights_only=True)


def _trial_device(workers: int = 1) -> str:
    """CUDA when Ray gave this trial a GPU; otherwise CPU with torch threads = the trial's CPU share."""
    if torch.cuda.is_available() and ray.get_gpu_ids():
        return "cuda"
    torch.set_num_threads(_threads(workers))
    return "cpu"


def _threads(workers: int) -> int:
    """torch threads for each of ``workers`` processes: the trial's CPUs shared out, at least one each."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return max(1, int(cpus) // workers)


def _loader_workers() -> int:
    """Streaming path only: decode in as many worker processes as the trial has CPUs (none for one CPU)."""
    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
    return cpus if cpus >= 2 else 0
