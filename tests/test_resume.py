"""``tune-tl resume``: what it rebuilds from search.json, and the mistakes it names before Ray starts."""

import json

import pytest

from tune_tl.cli import main
from tune_tl.errors import TuneTLError
from tune_tl.search.resume import resume_search
from tune_tl.search.run import SearchOptions
from tune_tl.search.sampler import SampleTarget
from tune_tl.store.search_run import SearchRun

YAML = "seed: 3\nbudget: {samples: 5, max_epochs: 2}\nparams:\n  lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"


def search_folder(tmp_path, **meta):
    root = tmp_path / "s"
    root.mkdir(parents=True)
    (root / "tuner.pkl").write_bytes(b"")
    base = {"space_file": "x.yaml", "space_text": YAML, "options": {}, "seed": 7, "root": str(root), "data": {"source": "digits"},
            "backbone": {"name": "efficientnet_lite0"},
            "budget": {"samples": 6, "max_epochs": 3, "grace_period": 1, "reduction_factor": 2.0}}
    (root / "search.json").write_text(json.dumps({**base, **meta}))
    return root


def test_the_spec_is_rebuilt_from_the_stored_space_text_with_the_command_line_overrides(tmp_path):
    root = search_folder(tmp_path)
    spec = SearchRun.open(root).spec
    assert spec.budget.samples == 6 and spec.budget.max_epochs == 3 and spec.seed == 7
    assert [p.name for p in spec.params] == ["lr"] and spec.source == "x.yaml"


def test_resume_names_a_folder_that_is_not_a_search(tmp_path):
    with pytest.raises(TuneTLError, match="not a tune_tl search folder"):
        resume_search(tmp_path)


def test_resume_refuses_a_moved_folder_and_fewer_samples(tmp_path):
    root = search_folder(tmp_path, root="/elsewhere/s")
    with pytest.raises(TuneTLError, match="was moved from /elsewhere/s"):
        resume_search(root)
    root2 = search_folder(tmp_path / "b")
    assert main(["resume", str(root2), "--samples", "2"]) == 2


def test_max_failures_must_not_be_negative():
    with pytest.raises(TuneTLError, match="--max-failures"):
        SearchOptions(max_failures=-1).validate()


def test_the_sample_target_grows_only_while_extending():
    gen = SampleTarget.__new__(SampleTarget)  # set_state only touches the generator's own counters
    state = {"counter": 6, "total_samples": 6, "finished": True, "experiment": None}
    gen.set_state(state)
    assert gen.total_samples == 6 and gen.is_finished()
    with SampleTarget.extending(9):
        gen.set_state(state)
    assert gen.total_samples == 9 and not gen.is_finished()
    assert SampleTarget.extend_to is None
