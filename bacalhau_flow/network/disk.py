"""A shard's disk limit (`resources.disk`, ARCHITECTURE.md decision 6): its staged inputs and
the outputs it writes must fit in it together.

The node checks the inputs once they are staged, and watches the outputs folder while the
command runs: a command that writes past its limit is killed, so it cannot fill the node's
disk, and its shard fails with a clear error (its stdout and stderr are still kept).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from ..errors import DiskLimitExceeded
from ..spec.values import format_size

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
    """While open, polls the size of `outputs` and calls `stop()` once if it passes `allowed`."""

    def __init__(self, outputs: Path, allowed: int, stop: Callable[[], None], every: float = WATCH_SECONDS):
        self.outputs, self.allowed, self.stop, self.every = outputs, allowed, stop, every
        self.written = 0  # the largest size seen
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bflow-output-watch", daemon=True)

    @property
    def exceeded(self) -> bool:
        return self.written > self.allowed

    def __enter__(self) -> "OutputWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self._measure()  # what the command left at the end counts too

    def _watch(self) -> None:
        while not self._done.wait(self.every):
            if self._measure():
                self.stop()
                return

    def _measure(self) -> bool:
        self.written = max(self.written, tree_bytes(self.outputs))
        return self.exceeded
