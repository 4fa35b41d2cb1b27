"""A shard's disk limit (`resources.disk`, ARCHITECTURE.md decision 6): its staged inputs and
everything it writes must fit in it together: its outputs, its stdout and stderr, its scratch
folders ($HOME, $TMPDIR) and anything else it leaves in its work directory.

The node checks the inputs once they are staged, and watches the rest of the work directory
while the command runs: a command that writes past its limit is killed, so it cannot fill the
node's disk, and its shard fails with a clear error (its stdout and stderr are still kept).
stdout and stderr are also bounded as they are written: the local executor stops writing a
stream at the limit (`Execution.stream_limit`) and kills the command; the streams of the other
executors are cut to the limit afterwards (`cut_streams`), the watch having stopped them.
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
    """Bytes of the regular files under `path` (symlinks are neither followed nor counted).
    Iterative: a command may leave a tree deeper than Python's recursion limit (os.walk's)."""
    total, pending = 0, [os.fspath(path)]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue  # removed while we counted
        except OSError:  # gone, or not readable: as os.walk, what cannot be listed is not counted
            continue
    return total


def check_inputs(shard_index: int, staged: int, limit: int) -> None:
    """Raise DiskLimitExceeded when the staged inputs alone exceed the shard's disk limit."""
    if staged > limit:
        raise DiskLimitExceeded(
            f"the inputs of shard {shard_index} are {format_size(staged)}, more than its disk limit of "
            f"{format_size(limit)}", hint=RAISE_HINT, retryable=False)


def outputs_error(shard_index: int, written: int, allowed: int, limit: int,
                  parts: dict[str, int] | None = None) -> str:
    """`parts`: bytes by entry of the work directory (outputs, stdout, home, ...), named when
    more than the outputs took room."""
    others = {k: v for k, v in (parts or {}).items() if k != "outputs" and v}
    what = ("of outputs" if not others else
            "(" + ", ".join(f"{_PART_NAMES.get(k, k)} {format_size(v)}" for k, v in
                            sorted((parts or {}).items(), key=lambda kv: -kv[1]) if v) + ")")
    return (f"shard {shard_index} wrote {format_size(written)} or more {what}, more than the "
            f"{format_size(allowed)} its disk limit of {format_size(limit)} leaves beside its inputs; "
            f"the command was stopped and its outputs dropped ({RAISE_HINT})")


_PART_NAMES = {"home": "$HOME", "tmp": "$TMPDIR"}


def stream_cut_error(stream: str, kept: int, staged: int, limit: int) -> str:
    inputs = f", {format_size(staged)} of it taken by its inputs" if staged else ""
    return (f"{stream} cut at {kept} bytes: the shard's disk limit is {format_size(limit)}{inputs}; "
            f"the command was stopped and its outputs dropped ({RAISE_HINT})")


def cut_streams(stdout: Path, stderr: Path, allowed: int) -> tuple[str, int] | None:
    """Truncate stdout and stderr so that together they fit in `allowed` (an executor that
    does not bound them itself may leave more before the watch stops it). Returns the stream
    cut and the bytes it kept, or None when they fit."""
    sizes = {"stdout": _size(stdout), "stderr": _size(stderr)}
    if sum(sizes.values()) <= allowed:
        return None
    paths = {"stdout": stdout, "stderr": stderr}
    big, small = sorted(sizes, key=lambda k: -sizes[k])
    keep = {small: min(sizes[small], allowed // 2)}
    keep[big] = allowed - keep[small]
    cut = [name for name in (big, small) if sizes[name] > keep[name]]
    for name in cut:
        os.truncate(paths[name], keep[name])
    return cut[0], keep[cut[0]]


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0


def work_bytes(work: Path, skip: tuple[str, ...] = ("inputs",)) -> dict[str, int]:
    """Bytes of each entry of a shard's work directory but `skip` (symlinks are not counted)."""
    parts: dict[str, int] = {}
    try:
        entries = list(os.scandir(work))
    except FileNotFoundError:
        return parts
    for entry in entries:
        if entry.name in skip:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                parts[entry.name] = tree_bytes(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                parts[entry.name] = entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue  # removed while we counted
    return parts


class OutputWatch:
    """While open, what the shard wrote into its work directory `work` (all but its inputs) is
    measured (by one watcher thread for all open watches of the process) and `stop()` is
    called once if it passes `allowed`."""

    def __init__(self, work: Path, allowed: int, stop: Callable[[], None]):
        self.work, self.allowed, self.stop = work, allowed, stop
        self.written = 0  # the largest size seen
        self.parts: dict[str, int] = {}  # bytes by entry of `work` when it was largest
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
        """Read the sizes now; call `stop()` the first time they are over the limit."""
        parts = work_bytes(self.work)
        total = sum(parts.values())
        if total >= self.written:
            self.written, self.parts = total, parts
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
                    log.debug("disk watch of %s failed", watch.work, exc_info=True)


_watcher = _Watcher()
