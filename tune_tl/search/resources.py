"""Does the Ray cluster have room for one trial? Checked once, right after Ray connects.

Ray Tune keeps a trial whose resources no node can ever offer PENDING forever, silently. A search
asking for ``--gpus-per-trial 2`` on a one-GPU machine must instead stop at once with one line that
says what to change. An autoscaling cluster (the Ray cluster launcher, KubeRay) may hold fewer
resources now than it can grow to: then the most its configuration allows counts, the figure Ray
Train checks its own worker groups against.

    >>> check_resources(SearchOptions(gpus_per_trial=2))   # doctest: +SKIP
    TuneTLError: --gpus-per-trial 2 needs 2 GPUs on one node, but the largest Ray node has 1 GPU ...
"""

from __future__ import annotations

import logging
import os

from tune_tl.compat import max_cluster_resources
from tune_tl.errors import TuneTLError

log = logging.getLogger(__name__)

#: Set to 1 to skip ``check_resources``.
SKIP_RESOURCE_CHECK_ENV = "TUNE_TL_SKIP_RESOURCE_CHECK"


def check_resources(options) -> None:
    """Raise ``TuneTLError`` unless one node of the cluster can hold one trial of ``options``.

    ``options`` is a ``SearchOptions``; Ray must be connected (``tune_tl.search.run.init_ray``). A
    trial is one Ray bundle, so its CPUs and GPUs must sit on a single node (its data-parallel
    workers are processes of that trial). ``TUNE_TL_SKIP_RESOURCE_CHECK=1`` skips the check (a
    cluster whose nodes are added by other means than Ray's autoscaler).
    """
    import ray

    if os.environ.get(SKIP_RESOURCE_CHECK_ENV) == "1":
        return
    need = {"CPU": float(options.cpus_per_trial), "GPU": float(options.gpus_per_trial)}
    largest = largest_node(ray.nodes())
    grows_to = _autoscaling_limits()
    for resource, amount in need.items():
        if amount <= 0 or largest.get(resource, 0.0) >= amount:
            continue
        if grows_to is not None and grows_to.get(resource, 0) >= amount:
            log.info("the cluster has %g %s on its largest node now; its autoscaler can add up to %s",
                     largest.get(resource, 0.0), resource, grows_to[resource])
            continue
        raise TuneTLError(_message(resource, amount, largest.get(resource, 0.0), ray.cluster_resources().get(resource, 0.0)))


def trial_slots(options) -> int | None:
    """How many trials of ``options`` the cluster's alive nodes hold at once (each trial's CPUs and GPUs on one node);
    ``None`` when an autoscaler may add nodes. Ray must be connected.

    A search without ``--concurrency`` limits its live trials to this: Ray Tune otherwise asks the searcher for trials
    it queues PENDING, and admission (``search.admission``) judged such a trial by the clock and the calibration of
    when it was asked for, not of when a slot freed (a photo search started one with 94 s left whose epoch needed 400).
    """
    import ray

    if _autoscaling_limits() is not None:
        return None
    need = {r: float(a) for r, a in (("CPU", options.cpus_per_trial), ("GPU", options.gpus_per_trial)) if a > 0}
    slots = sum(min((int(node["Resources"].get(r, 0.0) // a) for r, a in need.items()), default=0)
                for node in ray.nodes() if node.get("Alive"))
    return max(1, slots)


def largest_node(nodes: list[dict]) -> dict[str, float]:
    """The most of each resource that one alive node of ``ray.nodes()`` offers."""
    largest: dict[str, float] = {}
    for node in nodes:
        if not node.get("Alive"):
            continue
        for resource, amount in node.get("Resources", {}).items():
            largest[resource] = max(largest.get(resource, 0.0), float(amount))
    return largest


def _message(resource: str, amount: float, on_one_node: float, in_total: float) -> str:
    flag = {"CPU": "--cpus-per-trial", "GPU": "--gpus-per-trial"}[resource]
    unit = resource + ("s" if amount != 1 else "")
    return (f"{flag} {amount:g} needs {amount:g} {unit} on one node, but the largest Ray node has {on_one_node:g} "
            f"({in_total:g} in the whole cluster); lower {flag} or join a cluster with larger nodes (--address)")


def _autoscaling_limits() -> dict[str, float] | None:
    """The most of each resource the cluster's autoscaler may provide, or ``None`` when it does not autoscale."""
    try:  # a private Ray API (see tune_tl.compat); absent or failing = no autoscaler
        return max_cluster_resources()
    except Exception as exc:  # noqa: BLE001 - an unknown cluster type must not fail the search
        log.info("no autoscaling limits from Ray (%s: %s); checking the nodes Ray has now", type(exc).__name__, exc)
        return None
