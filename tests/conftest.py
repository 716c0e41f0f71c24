"""Shared fixtures: one local Ray instance for the whole session (starting Ray costs seconds)."""

import os
import tempfile

import pytest

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
