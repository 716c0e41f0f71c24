"""Shared fixtures: one local Ray instance for the whole session (starting Ray costs seconds)."""

import tempfile

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    # A private temp dir: ray.init() would otherwise join any Ray already running on this machine
    # (it finds /tmp/ray/ray_current_cluster) and then refuses num_cpus.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(prefix="ttl", dir="/tmp"))
    yield ray
    ray.shutdown()
