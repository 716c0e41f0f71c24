"""A search killed during its stage-0 probes resumes: the probes it finished are kept, the rest run, then the trials."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from faults import Driver
from spaces import write_tiny_space

BACKBONES = ["tiny_test_cnn", "efficientnet_lite0"]  # probed in this order: the cheaper first


@pytest.mark.slow
@pytest.mark.processes
def test_a_search_killed_between_its_probes_resumes_without_running_the_finished_probe_again(tmp_path):
    space = write_tiny_space(tmp_path, backbone={"name": BACKBONES}, budget={"samples": 3},
                             params={"freeze_blocks": "all", "head": "mlp", "head_hidden": 32, "lr": 0.03, "optimizer": "sgd"})
    root, faults = tmp_path / "out" / "s0", tmp_path / "faults"
    search = Driver(["search", str(space), "--output", str(tmp_path / "out"), "--name", "s0", "--concurrency", "1"],
                    tmp_path / "search.log", fault_dir=faults, at="between_probes")
    try:
        assert search.wait_for_moment(timeout=300).startswith("between_probes")
    finally:
        search.kill()
    first = json.loads((root / "search.json").read_text())["probes"]
    assert [p["backbone"] for p in first] == BACKBONES[:1]

    resume = Driver(["resume", str(root)], tmp_path / "resume.log", fault_dir=faults)
    assert resume.wait(timeout=300) == 0, resume.tail()
    output = resume.tail(100_000)
    assert "kept from the run that was stopped (not run again)" in output
    assert (faults / "probes.log").read_text().split() == BACKBONES, "each probe measured once, over both drivers"
    trials = pd.read_parquet(root / "trials")
    probes = trials[trials["probe"]]
    assert sorted(probes["backbone"]) == sorted(BACKBONES) and probes["trial_id"].is_unique
    assert (~trials["probe"]).sum() == 3, "then the search ran its trials"
    assert [p["trial_id"] for p in json.loads((root / "search.json").read_text())["probes"]][:1] == [first[0]["trial_id"]]
    assert "Search finished:" in output and "Traceback" not in output
