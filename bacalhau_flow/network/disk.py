"""A shard's disk limit (`resources.disk`, ARCHITECTURE.md decision 6): its staged inputs and
the outputs it writes must fit in it together.

The node checks the inputs once they are staged, and watches the outputs folder while the
command runs: a command that writes past its limit is killed, so it cannot fill the node's
disk, and its shard fails with a clear error (its stdout and stderr are still kept).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import DiskLimitExceeded
from ..spec.values import format_size

log = logging.getLogger("bacalhau_flow.node")

WATCH_SECONDS = 0.25
RAISE_HINT = "raise resources.disk in the spec, or give each shard less data (a finer glob, a smaller batch_size)"


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (symlinks are neither followed nor counted)."""
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue  # removed while we counted
            if not os.path.islink(os.path.join(dirpath, name)):
                total += st.st_size
    return total


def check_inputs(shard_index: int, staged: int, limit: int) -> None:
    """Raise DiskLimitExceeded when the staged inputs alone exceed the shard's disk limit."""
    if staged > limit:
        raise DiskLimitExceeded(
            f"the inputs of shard {shard_index} are {format_size(staged)}, more than its disk limit of "
            f"{format_size(limit)}", hint=RAISE_HINT, retryable=False)


def outputs_error(shard_index: int, written: int, allowed: int, limit: int) -> str:
    return (f"shard {shard_index} wrote {format_size(written)} or more of outputs, more than the "
            f"{format_size(allowed)} its disk limit of {format_size(limit)} leaves beside its inputs; "
            f"the command was stopped and its outputs dropped ({RAISE_HINT})")


class OutputWatch:
    """While open, the size of `outputs` is polled (by one watcher thread for all open
    watches of the process) and `stop()` is called once if it passes `allowed`."""

    def __init__(self, outputs: Path, allowed: int, stop: Callable[[], None]):
        self.outputs, self.allowed, self.stop = outputs, allowed, stop
        self.written = 0  # the largest size seen
        self._stopped = False

    @property
    def exceeded(self) -> bool:
        return self.written > self.allowed

    def __enter__(self) -> "OutputWatch":
        _watcher.add(self)
        return self

    def __exit__(self, *exc) -> None:
        _watcher.remove(self)
        self.measure()  # what the command left at the end counts too

    def measure(self) -> None:
        """Read the outputs' size now; call `stop()` the first time it is over the limit."""
        self.written = max(self.written, tree_bytes(self.outputs))
        if self.exceeded and not self._stopped:
            self._stopped = True
            self.stop()


class _Watcher:
    """One daemon thread that measures every open OutputWatch each WATCH_SECONDS: a thread
    per shard cost more than a shard of `true` itself."""

    def __init__(self) -> None:
        self._watches: set[OutputWatch] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, watch: OutputWatch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="bflow-output-watch", daemon=True)
                self._thread.start()

    def remove(self, watch: OutputWatch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            with self._lock:
                watches = list(self._watches)
            for watch in watches:
                try:
                    watch.measure()
                except Exception:  # noqa: BLE001 - one folder gone mid-walk must not stop the others
                    log.debug("output watch of %s failed", watch.outputs, exc_info=True)


_watcher = _Watcher()
