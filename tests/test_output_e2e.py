"""What a search prints when its output is not a terminal (CI, ``| tee``, a log file): a short, plain log."""

import re

import pandas as pd
import pytest
from faults import Driver

pytestmark = pytest.mark.processes

#: A few dozen lines at most: our INFO lines, one line per trial, the summary.
LINE_BUDGET = 30


@pytest.mark.slow
def test_a_search_piped_to_a_file_prints_a_few_plain_lines_and_keeps_rays_log_in_the_search_folder(tmp_path):
    log = tmp_path / "search.log"
    driver = Driver(["search", "--samples", "2", "--max-epochs", "1", "--output", str(tmp_path / "out"), "--name", "s"], log)
    assert driver.wait(timeout=600) == 0, driver.tail()
    text = log.read_text()
    lines = text.splitlines()
    assert len(lines) <= LINE_BUDGET, text
    assert not re.search(r"warning", text, re.I), text
    assert not any(mark in text for mark in ("╭", "│", "Trial status", "Configuration for experiment", "Checkpoint successfully")), text
    assert "\r" not in text and "\x1b[" not in text, "nothing that redraws"
    root = tmp_path / "out" / "s"
    trials = pd.read_parquet(root / "trials")
    assert sum(line.endswith("- best so far") and " probe efficientnet_lite0 at 32 px" in line for line in lines) == 1, \
        "the probe's line, as it ends"
    for trial_id in trials.loc[~trials["probe"], "trial_id"]:
        assert sum(f"trial {trial_id} " in line for line in lines) == 1, "one line per finished trial"
        assert (root / trial_id).is_dir(), "Ray's trial folder is named by the trial id"
    assert [line for line in lines if line.strip()][-1].startswith("Read them with:"), "ends with the summary"
    assert (root / "logs" / "ray.log").is_file()
