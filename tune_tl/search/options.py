"""How to run a search (not what to search): ``SearchOptions``, the objective, and the names the flags take.

The CLI builds a ``SearchOptions`` from its flags (``--cpus-per-trial`` ↔ ``cpus_per_trial``) and
``validate`` checks it before anything is created; ``search.json`` records it field by field, and
``tune-tl resume`` rebuilds it from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tune_tl.errors import TuneTLError

METRIC, MODE = "val_acc", "max"  # the one place the objective is named
#: Longest ``--name``: file names are limited to 255 bytes and Ray's trial folders add to it.
MAX_NAME_BYTES = 100
#: ``--scheduler`` names (``search.schedulers.make_scheduler``); the first is the default.
SCHEDULERS = ("cost-asha", "asha", "pasha", "fifo")
#: ``--sampler`` names (``search.sampler.make_sampler``); the first is the default.
SAMPLERS = ("tpe", "random")
#: Samplers only the benchmarks use: ``tpe-classic`` is Optuna's stock TPE, the old default's; ``tpe-gain`` is
#: ``tpe`` without the cost (expected gain only), to measure what the cost adds.
BENCHMARK_SAMPLERS = ("tpe-classic", "tpe-gain")


@dataclass(frozen=True)
class SearchOptions:
    """How to run a search (not what to search): resources, concurrency, where results go."""

    output: str = "results"
    name: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    concurrency: int | None = None
    #: Ray cluster to join (``ray://`` or ``host:port``); ``None`` = ``RAY_ADDRESS`` or a local Ray.
    address: str | None = None
    #: ``cost-asha`` (ASHA on rungs of predicted training cost), ``asha`` (epoch rungs: the old default), ``pasha``
    #: (progressive maximum budget) or ``fifo`` (every trial runs max_epochs: the baseline to compare).
    scheduler: str = SCHEDULERS[0]
    #: ``tpe`` (Optuna's TPE, choosing by expected gain per predicted cost) or ``random`` (Optuna's RandomSampler: the baseline).
    sampler: str = SAMPLERS[0]
    #: Enqueue the textbook recipes (fine-tune, linear probe, LP→FT) as the first trials.
    textbook_start: bool = True
    #: Stage 0: a linear probe per backbone before any fine-tune (``search.probes``).
    probes: bool = True
    #: 0: the progress view, Ray's log in ``<search>/logs/ray.log``; 1 or 2: Ray's own stream (``--verbose``).
    verbose: int = 0
    #: Share frozen-backbone features between epochs and trials (``<search>/feature_cache``).
    feature_cache: bool = True
    #: Retries of a trial whose worker died, each from its last checkpoint.
    max_failures: int = 2
    #: Earlier searches on the same data whose finished trials seed this search's Optuna study.
    warm_start: tuple[str, ...] = ()
    #: The command that started the search (recorded in search.json; empty when called from Python).
    command_line: tuple[str, ...] = ()
    #: Data-parallel workers per trial (``tune_tl.training.distributed``): gloo on CPU, NCCL with one GPU each.
    workers_per_trial: int = 1
    #: ``--recheck K``: the top K configs are re-run after the search, so their checkpoints are kept too.
    recheck: int = 0

    @property
    def workers(self) -> int:
        """Workers each trial trains with: ``--workers-per-trial``, or one per GPU when ``--gpus-per-trial`` > 1."""
        return int(self.gpus_per_trial) if self.gpus_per_trial > 1 else self.workers_per_trial

    def validate(self) -> None:
        for flag, value in (("--cpus-per-trial", self.cpus_per_trial), ("--gpus-per-trial", self.gpus_per_trial)):
            if not math.isfinite(value):
                raise TuneTLError(f"{flag} must be a finite number, got {value}")
        if self.cpus_per_trial <= 0:
            raise TuneTLError(f"--cpus-per-trial must be positive, got {self.cpus_per_trial}")
        if not 0 <= self.gpus_per_trial <= 1 and not float(self.gpus_per_trial).is_integer():
            raise TuneTLError(f"--gpus-per-trial must be a fraction in (0, 1] or a whole number, got {self.gpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise TuneTLError(f"--gpus-per-trial must not be negative, got {self.gpus_per_trial}")
        if self.recheck < 0:
            raise TuneTLError(f"--recheck must be at least 1, got {self.recheck}")
        if self.max_failures < 0:
            raise TuneTLError(f"--max-failures must be 0 or more, got {self.max_failures}")
        if self.concurrency is not None and self.concurrency < 1:
            raise TuneTLError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.scheduler not in SCHEDULERS:
            raise TuneTLError(f"--scheduler must be one of {', '.join(SCHEDULERS)}; got {self.scheduler!r}")
        if self.sampler not in SAMPLERS + BENCHMARK_SAMPLERS:
            raise TuneTLError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if self.workers_per_trial < 1:
            raise TuneTLError(f"--workers-per-trial must be at least 1, got {self.workers_per_trial}")
        if self.gpus_per_trial > 1 and self.workers_per_trial not in (1, int(self.gpus_per_trial)):
            raise TuneTLError(f"--gpus-per-trial {self.gpus_per_trial:g} trains with one worker per GPU; "
                              f"--workers-per-trial must be {int(self.gpus_per_trial)} (or left out), got {self.workers_per_trial}")
        if self.workers_per_trial > 1 and 0 < self.gpus_per_trial < 1:
            raise TuneTLError(f"--workers-per-trial {self.workers_per_trial} needs one whole GPU per worker "
                              f"(--gpus-per-trial {self.workers_per_trial}) or none (CPU); got --gpus-per-trial {self.gpus_per_trial:g}")
        if self.workers_per_trial > 1 and self.gpus_per_trial == 1:
            raise TuneTLError(f"--workers-per-trial {self.workers_per_trial} needs one GPU per worker: "
                              f"use --gpus-per-trial {self.workers_per_trial} (or 0 for CPU workers)")
        if self.name is not None and (not self.name or "/" in self.name or "\\" in self.name or self.name.startswith(".")
                                      or not self.name.isprintable()):
            raise TuneTLError(f"--name must be a plain folder name, got {self.name!r}")
        if self.name is not None and len(self.name.encode()) > MAX_NAME_BYTES:
            raise TuneTLError(f"--name is {len(self.name.encode())} bytes long; use at most {MAX_NAME_BYTES} "
                              f"(Ray adds trial folders and file names below it)")
