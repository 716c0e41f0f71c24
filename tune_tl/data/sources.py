"""Name → loader for the data sources a space file can name."""

from __future__ import annotations

from tune_tl.data.types import LabelledImages
from tune_tl.errors import TuneTLError


def load_source(source: str, path: str | None = None) -> LabelledImages:
    """Load the images of ``source`` (``digits``; more sources plug in here)."""
    if source == "digits":
        from tune_tl.data.digits import load_digits_images

        return load_digits_images()
    raise TuneTLError(f"data.source: {source!r} is not supported yet; use 'digits'")
