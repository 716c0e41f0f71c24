"""docs/backbones.md's own-backbone script, run as it stands: a real search on a backbone registered from Python."""

import re
from pathlib import Path

import pandas as pd
import pytest

from tune_tl.models import registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "backbones.md"


def _example() -> str:
    section = DOC.read_text(encoding="utf-8").split("## Your own backbone", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_documented_registered_backbone_is_searched_in_ray_workers_that_never_registered_it(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # As a user's script: __main__, so cloudpickle ships its functions by value to Ray's workers.
    namespace = {"__name__": "__main__"}
    try:
        exec(compile(_example(), str(DOC), "exec"), namespace)
    finally:
        registry._FAMILIES.pop("tiny_cnn", None)
    summary = namespace["summary"]
    trials = pd.read_parquet(tmp_path / "results" / "tiny_cnn" / "trials")
    tuned = trials[~trials["probe"]]
    assert len(tuned) == 2 and set(tuned["status"]) == {"completed"}, tuned[["trial_id", "status"]]
    assert set(trials["backbone"]) == {"tiny_cnn"} and set(trials["resolution"]) == {32}
    assert set(tuned["freeze_blocks"]) <= {0, 1}
    assert summary.best["best_val_acc"] > 0.1, "the trials trained: better than chance on ten digits"
