"""Shared fixtures: one local Ray instance for the whole session (starting Ray costs seconds), and one
finished search that every test which only reads a search shares (running one costs a minute)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from spaces import FINISHED, write_tiny_space

from tune_tl.cli import main

# Dummy credentials for the local S3 server (tests/s3_server.py), set before any Ray process starts so
# workers inherit them; and no probing of a cloud metadata service for real ones.
for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(key, value)


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
