"""The Ray session a search runs in: join a cluster or start a private local Ray, and where Ray stores results.

    >>> init_ray()                      # a fresh local Ray, no dashboard, quiet
    >>> init_ray("ray://head:10001")    # a cluster
"""

from __future__ import annotations

import logging
import os
import platform
import socket
from importlib.metadata import version
from typing import Any

import ray
import torch

from tune_tl.errors import TuneTLError
from tune_tl.store.storage import Location

log = logging.getLogger(__name__)


#: How long a cluster's head may take to accept a connection before ``--address`` is called unreachable.
ADDRESS_TIMEOUT_S = 5.0


def check_address(address: str | None) -> None:
    """Fail in seconds, before any data is decoded, when ``address`` (or ``$RAY_ADDRESS``) names a Ray head that
    does not accept connections: ``ray.init`` would otherwise find out only after the images were prepared.

    ``auto`` and ``local`` are left to Ray (they name no host); ``host:port`` and ``ray://host:port`` get one TCP
    connection attempt.
    """
    flag = "--address" if address else "$RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local") or ray.is_initialized():
        return
    where = address.split("://", 1)[1] if "://" in address else address
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise TuneTLError(f"{flag} {address!r}: expected HOST:PORT or ray://HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as exc:
        raise TuneTLError(f"{flag} {address}: no Ray cluster answers there ({exc.strerror or exc}); start it with "
                          "`ray start --head`, or leave --address out for a local Ray") from None


def init_ray(address: str | None = None, verbose: int = 1) -> None:
    """Join ``address`` (or ``$RAY_ADDRESS``), else start a fresh local Ray with no dashboard.

    Unless ``verbose``, what trial processes print stays in Ray's session logs (``/tmp/ray/session_*/logs``)
    instead of streaming to this terminal: the progress view reports each trial's outcome and error.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    quiet = {} if verbose else {"log_to_driver": False}
    if address:
        ray.init(address=address, logging_level=logging.WARNING, **quiet)
    else:  # address="local": never join a stray cluster; no dashboard, so nothing listens on the network
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, **quiet)


def storage_config(root: Location) -> dict[str, Any]:
    """Ray's ``storage_path`` / ``storage_filesystem`` for the experiment folder ``root``."""
    if root.is_local:
        return {"storage_path": str(root.parent.local_path)}
    return {"storage_path": root.parent.path, "storage_filesystem": root.fs}


#: The libraries whose versions ``search.json`` records, besides torch's own (its build tag says CPU or which CUDA).
LIBRARIES = ("torchvision", "timm", "ray", "optuna")


def versions() -> dict[str, Any]:
    """Where and with what the search ran (recorded in ``search.json``). Read from the installed packages' metadata:
    importing torchvision and timm costs a process about 2 s of CPU, and a search on other backbones never needs them."""
    return {
        "host": platform.node(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, **{name: version(name) for name in LIBRARIES}},
    }


def alive_node_ids() -> list[str]:
    """Ids of the Ray nodes alive now (one on a laptop); ``[]`` when Ray cannot say (metadata never fails a search)."""
    try:
        return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    except (RuntimeError, ConnectionError) as exc:
        log.warning("could not list the Ray nodes for search.json: %s", exc)
        return []
