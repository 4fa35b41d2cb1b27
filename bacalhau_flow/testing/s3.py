"""A real S3 server for tests: moto's ThreadedMotoServer on a free local port.

While it runs, the standard AWS environment points every S3 client in this process at it
(`AWS_ENDPOINT_URL`, which botocore and so s3fs honour, and test credentials), so code under
test reads and writes `s3://` urls exactly as it would against AWS. The environment and
fsspec's cached S3 filesystems are restored when it stops.

    # tests/conftest.py loads this module as a pytest plugin, so `s3_server` is a fixture there

    def test_x(s3_server):
        bucket = s3_server.bucket({"data/a.txt": b"alpha"})  # a fresh bucket holding these keys
        ...  # read s3://{bucket}/data
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Iterator

import pytest

from .requires import import_or_skip

MOTO_HINT = "pip install 'moto[server]==5.2.5' s3fs (bash scripts/setup.sh installs both)"

# Variables that could send botocore elsewhere, or to other credentials, while the server runs.
_CLEARED = ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE")


class MotoS3:
    """A moto S3 server on 127.0.0.1, and the AWS environment that points at it."""

    def __init__(self, region: str = "us-east-1"):
        self.region = region
        self._server = None
        self._saved: dict[str, str | None] = {}

    @property
    def endpoint(self) -> str:
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def start(self) -> MotoS3:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": self.region}
        for key in (*env, *_CLEARED):
            self._saved[key] = os.environ.get(key)
            os.environ.pop(key, None)
        os.environ.update(env)
        _forget_s3_filesystems()
        return self

    def stop(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()
        _forget_s3_filesystems()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def filesystem(self):
        """A fresh s3fs filesystem talking to this server."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True)

    def bucket(self, files: dict[str, bytes] | None = None, name: str | None = None) -> str:
        """Create a bucket (a fresh name unless given) holding `files` (key -> bytes); its name."""
        name = name or f"bflow-test-{uuid.uuid4().hex[:12]}"
        fs = self.filesystem()
        fs.mkdir(name)
        if files:
            fs.pipe({f"{name}/{key}": data for key, data in files.items()})
        return name

    def read(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under `prefix` of `bucket`: key (relative to the prefix) -> bytes."""
        fs = self.filesystem()
        root = f"{bucket}/{prefix}".rstrip("/")
        return {key[len(root) + 1:]: fs.cat_file(key) for key in fs.find(root)}


def _forget_s3_filesystems() -> None:
    """fsspec caches filesystem instances; an S3 one keeps the endpoint it was made with."""
    try:
        import s3fs
    except ImportError:
        return
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3_server() -> Iterator[MotoS3]:
    """A moto S3 server for the tests of one module; skipped (failed in CI) without moto or s3fs."""
    import_or_skip("moto.server", "moto's S3 server", MOTO_HINT)
    import_or_skip("s3fs", "s3fs", MOTO_HINT)
    with MotoS3() as server:
        yield server
