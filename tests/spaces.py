"""Tiny search spaces for the end-to-end tests: one base, and each test says only what it changes.

The base is digits at 32 px on EfficientNet-Lite0 (a trial takes seconds, nothing is downloaded), two
trials of one epoch. ``tiny_space`` merges overrides into it section by section, so a test reads as the
difference that matters to it::

    tiny_space(budget={"samples": 6, "max_epochs": 3}, params={"head": ["linear", "mlp"]})
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

BASE: dict[str, Any] = {
    "seed": 0,
    "data": {"source": "digits", "val_fraction": 0.2},
    "backbone": {"name": "efficientnet_lite0", "weights": "imagenet"},
    "budget": {"samples": 2, "max_epochs": 1, "grace_period": 1, "reduction_factor": 2},
    "params": {"resolution": 32, "batch_size": 128},
}

#: The tests' tiny backbone (``tests/tiny_backbone.py``), for a search whose point is not the backbone:
#: ``write_tiny_space(tmp, backbone=TINY_CNN)``. About half the CPU of the same search on Lite0. Not for a search
#: whose model leaves the test's processes (``tune-tl predict`` in a process of its own, the second node of a
#: cluster): only processes that import ``tests/`` know it.
TINY_CNN = {"name": "tiny_test_cnn", "weights": "imagenet"}

#: The space of the session's finished search (``finished_search`` in conftest.py): five linear-probe
#: trials of at most two epochs, a linear or an MLP head, under the default cost-aware ASHA.
FINISHED = {"budget": {"samples": 5, "max_epochs": 2},
            "params": {"freeze_blocks": "all", "lr": {"low": 1.0e-4, "high": 3.0e-2, "log": True}, "head": ["linear", "mlp"],
                       "head_hidden": 32}}


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides``: a section (a dict) is merged key by key, any other value replaces;
    ``None`` removes the key (in a section or at the top)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            section = {**out[key], **value}
            out[key] = {k: v for k, v in section.items() if v is not None}
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def tiny_space(**overrides: Any) -> str:
    """The base space as YAML with ``overrides`` merged in (a section's keys are kept unless overridden;
    ``None`` removes a key, e.g. ``data={"source": None}`` for a search given ``--data DIR``)."""
    lines = []
    for key, value in _merge(BASE, overrides).items():
        if key == "params":  # one line per parameter, as people write them (and tests append to them)
            lines += ["params:"] + ["  " + _line(name, v) for name, v in value.items()]
        else:
            lines.append(_line(key, value))
    return "\n".join(lines) + "\n"


def _line(key: str, value: Any) -> str:
    """``key: value`` on one line, the value in YAML's flow style."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000)
    return f"{key}: " + text.removesuffix("\n...\n").rstrip("\n")  # a scalar's dump ends the document


def write_tiny_space(folder: Path, name: str = "space.yaml", **overrides: Any) -> Path:
    """``tiny_space(**overrides)`` written to ``folder/name``; returns the file."""
    path = Path(folder) / name
    path.write_text(tiny_space(**overrides))
    return path
