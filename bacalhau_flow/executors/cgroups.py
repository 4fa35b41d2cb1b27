"""Cgroups v2 for the local executor (executors/local.py): one per run, under `bflow-<pid>`.

A run's cgroup is `bflow-<pid>/run-<n>` under this process's own cgroup. The command enters it
before it starts (the child of a vfork joins it and execs the command, executors/spawn.py; or,
where that library is not built, a `/bin/sh` does, JOIN_CGROUP), so all it forks is inside,
and `cgroup.kill` ends everything in it at once, also what left the process group.

The commands also end with this process, however it ends (a SIGKILL too): once the root is
made, a small shell (END_WITH_OWNER, one per process, executors/after_exit.py) waits for this
process's end and then kills the whole `bflow-<pid>` tree. Without it, the commands of a
killed `bflow run` (the embedded network's nodes live in its process) or `bflow node` ran on,
with nobody left to take their results.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
from pathlib import Path

from .after_exit import run_after_exit

# $0: the cgroup's cgroup.procs; "$@": the command. A shell that cannot join runs nothing.
JOIN_CGROUP = 'printf 0 > "$0" || exit 125; exec "$@"'
# $0: the root's cgroup.kill. `read` returns at this process's end (executors/after_exit.py).
END_WITH_OWNER = 'read -r _; printf 1 > "$0"'


class Cgroup:
    """One run's cgroup."""

    def __init__(self, path: Path):
        self.path = path
        self.killed = False  # cgroup.kill written: nothing in it runs on, nor can fork

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def signal(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    def kill(self) -> None:
        try:
            _write(self.path / "cgroup.kill", b"1")
            self.killed = True
        except OSError:
            pass

    def close(self, timeout: float = 5.0) -> None:
        """Remove the cgroup once its killed processes are gone."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY: a process is still on its way out
                if time.monotonic() > deadline:
                    return
                self.kill()
                time.sleep(0.01)


class CgroupRoot:
    """`bflow-<pid>` under this process's own cgroup v2: the parent of every run's cgroup, or
    None where this machine does not let us make one (then runs use the subreaper)."""

    _instance: "CgroupRoot | None" = None
    _checked_in: int | None = None  # the pid that looked (a forked child looks again)
    _lock = threading.Lock()

    def __init__(self, path: Path):
        self.path = path
        self._count = itertools.count()
        self._switch: subprocess.Popen | None = None  # kills them all once this process is gone

    @classmethod
    def get(cls) -> "CgroupRoot | NoCgroups":
        with cls._lock:
            if cls._checked_in != os.getpid():
                cls._checked_in = os.getpid()
                cls._instance = cls._make()
        return cls._instance or NoCgroups()

    @classmethod
    def _make(cls) -> "CgroupRoot | None":
        own = own_cgroup_dir()
        if own is None:
            return None
        _remove_stale(own)
        path = own / f"bflow-{os.getpid()}"
        try:
            path.mkdir(exist_ok=True)
            if not (path / "cgroup.kill").exists():  # before Linux 5.14 (the root cgroup has none)
                path.rmdir()
                return None
            probe = path / "probe"
            probe.mkdir(exist_ok=True)
            try:  # a process may be moved there too (delegation, the no-internal-process rule)
                moved = subprocess.run(["/bin/sh", "-c", JOIN_CGROUP, str(probe / "cgroup.procs"), "true"],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, timeout=10).returncode == 0
            finally:
                Cgroup(probe).close()
            if not moved:
                path.rmdir()
                return None
        except (OSError, subprocess.SubprocessError):
            return None
        import atexit

        atexit.register(_remove_quietly, path)
        root = cls(path)
        # ends the commands with this process (the module docstring); env: none, its shell needs none
        root._switch = run_after_exit(["/bin/sh", "-c", END_WITH_OWNER, str(path / "cgroup.kill")], env={})
        return root

    def new_group(self) -> Cgroup | None:
        """A fresh cgroup for one run; None when none can be made now (cgroup.max.descendants)."""
        for _ in range(100):
            path = self.path / f"run-{next(self._count)}"
            try:
                path.mkdir()
                return Cgroup(path)
            except FileExistsError:  # left by an earlier process that had this pid: not ours to touch
                continue
            except OSError:
                return None
        return None


class NoCgroups:
    def new_group(self) -> None:
        return None


def own_cgroup_dir() -> Path | None:
    """The folder of this process's cgroup v2 (hybrid systems included), or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    if own is None:
        return None
    for m in mounts:
        left, _, right = m.partition(" - ")
        if right.split(" ", 1)[0] != "cgroup2":
            continue
        fields = left.split()
        root, point = fields[3], fields[4]
        rel = os.path.relpath(own, root) if root != "/" else own.lstrip("/")
        if rel.startswith(".."):
            continue
        path = Path(point) / rel if rel != "." else Path(point)
        if path.is_dir():
            return path
    return None


def _remove_stale(own: Path) -> None:
    """Remove the empty cgroups left by bflow processes that are gone (a node killed by SIGKILL).
    Only empty ones: rmdir fails on a cgroup that still holds a process, and nothing is killed."""
    for parent in own.glob("bflow-*"):
        try:
            os.kill(int(parent.name[len("bflow-"):]), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        try:
            for child in parent.iterdir():
                if child.is_dir():
                    child.rmdir()
            parent.rmdir()
        except OSError:
            pass


def _write(path: Path, data: bytes) -> None:
    """Write `data` to a cgroup file: three system calls, where a text file's open, write and
    close take seven, on every run's hot path (each hands the GIL to another thread)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        for child in path.iterdir():
            if child.is_dir():
                Cgroup(child).close(timeout=1.0)
        path.rmdir()
    except OSError:
        pass

