"""Shared fixtures: one local Ray instance for the whole session (starting Ray costs seconds)."""

import tempfile

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    # address="local" and a private temp dir: a fresh instance even when another Ray runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ttl", dir="/tmp"))
    yield ray
    ray.shutdown()
