"""Read a search's Parquet results into pandas.

Example:
    >>> res = load_results("results/search-20261123-101500")
    >>> res.trials.sort_values("best_val_acc", ascending=False).head()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from tune_tl.errors import TuneTLError
from tune_tl.results import EPOCH_SCHEMA, TRIAL_SCHEMA


@dataclass(frozen=True)
class Results:
    """A search's ``trials`` (one row per finished trial) and ``epochs`` (per trial and epoch)."""

    trials: pd.DataFrame
    epochs: pd.DataFrame


def load_results(path: str | Path) -> Results:
    """Load both tables of the search in ``path``; an empty table if none is written yet."""
    root = Path(path)
    if not root.is_dir():
        raise TuneTLError(f"{root} is not a search results folder (expected {root}/trials and {root}/epochs)")
    return Results(_read(root / "trials", TRIAL_SCHEMA), _read(root / "epochs", EPOCH_SCHEMA))


def _read(directory: Path, schema) -> pd.DataFrame:
    if not directory.is_dir():
        return schema.empty_table().to_pandas()
    # An explicit schema lets parts written by older versions (fewer columns) read as nulls.
    return ds.dataset(directory, schema=schema, format="parquet").to_table().to_pandas()
