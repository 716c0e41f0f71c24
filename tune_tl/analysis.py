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
    trials = _read(root / "trials", TRIAL_SCHEMA, ["trial_id"])
    epochs = _read(root / "epochs", EPOCH_SCHEMA, ["trial_id", "epoch"])
    return Results(trials, epochs)


def _read(directory: Path, schema, key: list[str], attempts: int = 3) -> pd.DataFrame:
    if not directory.is_dir():
        return schema.empty_table().to_pandas()
    for attempt in range(attempts):
        try:
            # An explicit schema lets parts written by older versions (fewer columns) read as nulls.
            frame = ds.dataset(directory, schema=schema, format="parquet").to_table().to_pandas()
            break
        except FileNotFoundError:  # a part was compacted away between listing and reading
            if attempt == attempts - 1:
                raise
    # During a compaction a reader can see the merged part and its sources: keep one of each row.
    return frame.drop_duplicates(key, keep="last", ignore_index=True)
