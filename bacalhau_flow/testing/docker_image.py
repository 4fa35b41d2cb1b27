"""A tiny image for the docker executor's tests, made here: no registry is needed.

`ensure_test_image()` imports (as `docker import` does) a root filesystem of one file,
`/bin/busybox` from Debian's busybox-static, plus a symlink per applet the tests use.
The image carries a label with a fingerprint of that list, so an image of the same name
made another way, or with other applets, is replaced. Tests skip where there is no engine
or no busybox, and fail in CI (`require_or_skip`).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from pathlib import Path

from ..errors import ExecutorError
from .requires import require_or_skip

TEST_IMAGE = "bflow-test/busybox:1"
BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "cat", "echo", "wc", "ls", "grep", "sed", "awk", "sleep", "cp", "mv", "rm", "tr", "touch", "mkdir",
           "ln", "nc", "printf", "env", "head", "tail", "seq", "dd", "id", "cut", "sort", "uniq", "true", "false",
           "test", "stat", "date", "ip", "hostname", "chmod", "find", "xargs", "md5sum", "sha256sum")
FINGERPRINT_LABEL = "bflow.test-image"

_lock = threading.Lock()
_ready: set[str] = set()


def ensure_test_image() -> str:
    """The name of the busybox test image, imported into the engine on first use."""
    require_or_skip(BUSYBOX.is_file(), f"{BUSYBOX} (Debian's busybox-static)", "bash scripts/docker-engine.sh installs it")
    from ..executors.docker import engine

    try:
        client = engine()
    except ExecutorError as e:
        require_or_skip(False, "a Docker engine", e.hint)
    with _lock:
        if TEST_IMAGE not in _ready:
            _import(client)
            _ready.add(TEST_IMAGE)
    return TEST_IMAGE


def _fingerprint() -> str:
    return hashlib.sha256(" ".join(APPLETS).encode() + str(BUSYBOX.stat().st_size).encode()).hexdigest()[:16]


def _import(client) -> None:
    import docker

    fingerprint = _fingerprint()
    try:
        labels = client.api.inspect_image(TEST_IMAGE)["Config"].get("Labels") or {}
        if labels.get(FINGERPRINT_LABEL) == fingerprint:
            return
    except docker.errors.ImageNotFound:
        pass
    repository, tag = TEST_IMAGE.rsplit(":", 1)
    client.api.import_image_from_data(_rootfs(), repository=repository, tag=tag,
                                      changes=[f"LABEL {FINGERPRINT_LABEL}={fingerprint}", "ENV PATH=/bin"])


def _rootfs() -> bytes:
    """A tar of /bin/busybox, a symlink per applet, and a world-writable /tmp."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("tmp", 0o1777)):
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode = tarfile.DIRTYPE, mode
            tar.addfile(entry)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buffer.getvalue()
