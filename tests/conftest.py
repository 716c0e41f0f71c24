"""Shared fixtures: one local Ray instance for the whole session (starting Ray costs seconds), and one
finished search that every test which only reads a search shares (running one costs a minute)."""

# ruff: noqa: E402  (the environment below must be set before torch is imported)
import os

# Four pytest workers share the machine's cores, each with its own search drivers and Ray workers: one torch thread per
# process that does not set its own (a trial sets its CPU share), and OpenMP threads that sleep when idle instead of
# spinning. With torch's defaults (a thread per core, spin-waiting) four stage-0 resume tests at once on two cores took
# 272 s and 535 CPU-seconds; with these, 111 s and 221 (alone: 56 s, 73 CPU-seconds). Set before torch loads (below),
# inherited by every process a test starts.
for key, value in {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}.items():
    os.environ.setdefault(key, value)

import shutil
import tempfile
from pathlib import Path

import pytest
import tiny_backbone  # noqa: F401  (registers the end-to-end tests' backbone in every test process)
from spaces import FINISHED, write_tiny_space
from xdist.scheduler import LoadScopeScheduling

from tune_tl.cli import main

# Dummy credentials for the local S3 server (tests/s3_server.py), set before any Ray process starts so
# workers inherit them; and no probing of a cloud metadata service for real ones.
for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(key, value)


#: Tests that share an expensive fixture, by what they share (node-id prefixes: a file, or a file's tests): pytest-xdist
#: runs each group in one process, which builds the fixture once. Every other test is a unit of its own. (xdist's
#: ``--dist loadgroup`` and its ``xdist_group`` mark cannot group under pytest 9: they rename node ids.)
SHARED_FIXTURES = {
    "finished_search": ("tests/test_report_e2e.py::", "tests/test_warm_start.py::", "tests/test_hostile_results.py::"),
    "two seeded searches": ("tests/test_reproducible_e2e.py::",),
    "fault_search": tuple(f"tests/test_faults_e2e.py::test_a_{name}" for name in ("killed_trial_worker", "nan_loss", "cuda_out_of_memory")),
    "prepared digits": ("tests/test_boundary_cache.py::",),
    "FLOP counts": ("tests/test_cost_model.py::",),
    "a search with a test split": ("tests/test_honest_estimate_e2e.py::",),
    "digits and two probed backbones": ("tests/test_probes.py::",),
    "digits and Lite0 for forward once": ("tests/test_forward_once.py::",),
    "the local S3 server": ("tests/test_storage.py::",),
    # tests that start the session's Ray (``ray_local``) without a search: one Ray runtime for them all, not one per process
    "a Ray runtime without a search": ("tests/test_resources.py::", "tests/test_compat.py::test_the_autoscaling_limits_of_a_local_ray",
                                       "tests/data/test_sharing.py::test_workers_map"),
}


#: The longest tests (or groups), longest first, as measured in a full run (``--durations``; CONTRIBUTING, "How long the
#: suite takes"): started first, one per process, they end with the rest instead of after it. Measured in one run of the
#: whole suite, four processes on two cores: the first chain 249 s, the seeded pair 205 s, the second chain 122 s, the
#: two-node cluster 122 s, the piped search 103 s, the stage-0 resume 96 s, the same-name pair 90 s.
LONGEST_FIRST = (
    "tests/test_kill_anywhere_e2e.py::test_a_search_killed_at_any_moment_resumes_to_one_consistent_search[first_trial]",
    "tests/test_reproducible_e2e.py::",
    "tests/test_kill_anywhere_e2e.py::test_a_search_killed_at_any_moment_resumes_to_one_consistent_search[second_trial]",
    "tests/test_cluster.py::test_search_with_address_runs_trials_on_both_nodes_of_a_two_node_cluster",
    "tests/test_output_e2e.py::",
    "tests/test_stage0_resume_e2e.py::",
    "tests/test_hardening_e2e.py::",
)


class SharedFixtureScheduling(LoadScopeScheduling):
    """pytest-xdist's scope scheduling with :data:`SHARED_FIXTURES` as the scopes (and each other test its own), handed
    out in collection order (``pytest_collection_modifyitems``), not xdist's default of the scopes with most tests first:
    that default started the kill chains, single tests, after every group, and the suite waited minutes for them."""

    def __init__(self, config, log=None):
        config.option.loadscopereorder = False  # what ``--no-loadscope-reorder`` sets
        super().__init__(config, log)

    def _split_scope(self, nodeid: str) -> str:
        return next((group for group, prefixes in SHARED_FIXTURES.items() if nodeid.startswith(prefixes)), nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(items):
    """:data:`LONGEST_FIRST` first, then the other files with a real search or process, each file's tests otherwise kept
    together and in order: pytest-xdist starts the long tests first and fills the end with quick ones."""
    slow = {item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("processes")}

    def rank(item) -> int:
        listed = [i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)]
        return listed[0] if listed else len(LONGEST_FIRST) + (item.path not in slow)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def ray_local():
    import ray

    # address="local" and a private temp dir: a fresh instance even when another Ray runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ttl", dir="/tmp"))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def finished_search(ray_local, tmp_path_factory) -> Path:
    """The folder of one finished search (``spaces.FINISHED`` on digits, ``tune-tl search ... --concurrency 2``),
    run once per session for the tests that read a search: report, retrain, predict, warm starts.

    Treat it as read-only; a test that writes into a search (a report, a retrained model) takes
    ``search_copy``, so that what one test leaves behind cannot change what another sees.
    """
    tmp = tmp_path_factory.mktemp("finished")
    space = write_tiny_space(tmp, "tiny.yaml", **FINISHED)
    assert main(["search", str(space), "--output", str(tmp), "--name", "tiny", "--concurrency", "2"]) == 0
    return tmp / "tiny"


@pytest.fixture
def search_copy(finished_search, tmp_path) -> Path:
    """A copy of ``finished_search`` in this test's ``tmp_path``, to write into."""
    return Path(shutil.copytree(finished_search, tmp_path / finished_search.name, symlinks=True))
