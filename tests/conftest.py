"""Shared fixtures: one local Ray instance for the whole session (starting Ray costs seconds)."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    # address="local": a fresh instance even when another Ray cluster runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
