"""The search spaces shipped inside the package (``tune_tl/search_spaces/*.yaml``), found by name.

They are package data, read with ``importlib.resources``, so an installed wheel has them wherever it runs;
a source checkout shows the same files under ``search_spaces/`` (a link into the package). ``tune-tl spaces``
lists them and writes a copy to edit.

    >>> sorted(shipped_spaces())[:2]
    ['broad', 'default']
    >>> shipped_space("imagefolder").read_text()[:1]
    '#'
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import PurePath

#: The space ``tune-tl search`` runs without a space file and without ``--data``: digits, offline, minutes.
DEFAULT = "default"
#: The space ``tune-tl search --data DIR`` runs without a space file: the portfolio on the user's images.
IMAGEFOLDER = "imagefolder"


def shipped_spaces() -> dict[str, Traversable]:
    """Every shipped space by name (the file name without ``.yaml``)."""
    folder = resources.files("tune_tl") / "search_spaces"
    return {PurePath(f.name).stem: f for f in sorted(folder.iterdir(), key=lambda f: f.name) if f.name.endswith(".yaml")}


def shipped_space(name: str) -> Traversable | None:
    """The shipped space called ``name`` (``imagefolder`` or ``imagefolder.yaml``), or ``None``."""
    if PurePath(name).name != name:  # a path with folders is the user's file, never a shipped name
        return None
    return shipped_spaces().get(PurePath(name).stem if name.endswith(".yaml") else name)
