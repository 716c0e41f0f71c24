"""A real S3 endpoint on localhost (moto's server), for tests of ``--output s3://...``.

Everything goes over HTTP through pyarrow's own S3 client, exactly as with AWS; only the endpoint
differs. The endpoint travels in the URI's query string (pickled with the filesystem to Ray workers);
pyarrow takes credentials only from the environment, which ``conftest.py`` fills with dummy keys
before any Ray process starts, so workers inherit them.
"""

from __future__ import annotations

import pyarrow.fs as pafs


class LocalS3:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.query = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"

    def bucket(self, name: str) -> str:
        """Create bucket ``name``; returns its URI (with this server's query string)."""
        fs, _ = pafs.FileSystem.from_uri(f"s3://{name}?{self.query}&allow_bucket_creation=true")
        fs.create_dir(name)
        return f"s3://{name}"

    def uri(self, path: str) -> str:
        return f"s3://{path}?{self.query}"

    def listing(self, path: str) -> list[str]:
        fs, base = pafs.FileSystem.from_uri(self.uri(path))
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return sorted(i.path[len(base) + 1 :] for i in infos if i.type == pafs.FileType.File)

    def stop(self):
        self.server.stop()
