"""The Ray session a search runs in: join a cluster or start a private local Ray, and where Ray stores results.

    >>> init_ray()                      # a fresh local Ray, no dashboard, quiet
    >>> init_ray("ray://head:10001")    # a cluster
"""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

import optuna
import ray
import timm
import torch
import torchvision

from tune_tl.store.storage import Location

log = logging.getLogger(__name__)


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


def versions() -> dict[str, Any]:
    """Where and with what the search ran (recorded in ``search.json``)."""
    return {
        "host": platform.node(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
                     "timm": timm.__version__, "ray": ray.__version__, "optuna": optuna.__version__},
    }


def alive_node_ids() -> list[str]:
    """Ids of the Ray nodes alive now (one on a laptop); ``[]`` when Ray cannot say (metadata never fails a search)."""
    try:
        return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    except (RuntimeError, ConnectionError) as exc:
        log.warning("could not list the Ray nodes for search.json: %s", exc)
        return []
