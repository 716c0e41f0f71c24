"""Shared fixtures: one local Ray instance for the whole session (starting Ray costs seconds)."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    # address="local": always a fresh instance of our own, never a cluster another process started.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
