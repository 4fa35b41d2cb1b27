"""Starting a command straight inside its cgroup, with one exec.

Python 3.11 has no way to start a process inside a cgroup (glibc 2.39's
`posix_spawnattr_setcgroup_np` is newer than Debian 12's glibc), so the local executor had
a `/bin/sh` join the cgroup and then exec the command: two execs a command, ~0.6 ms of CPU
more a shard of `true` (docs/MEASURED.md). `spawn_into_cgroup.c` does it in one: the child
of a vfork joins the cgroup itself, then execs. scripts/setup.sh builds it, beside this
file, as `_spawn_into_cgroup.so`, which is loaded with ctypes.

Where it was not built (no C compiler) or does not load, `available()` is False and the
executor goes on with the shell (cgroups.JOIN_CGROUP): slower, the same behaviour.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from pathlib import Path

from ..errors import ExecutorError

LIBRARY = Path(__file__).with_name("_spawn_into_cgroup.so")
# What the child was doing when it failed (spawn_into_cgroup.c's STEP_*)
_STEPS = {1: "join its cgroup", 2: "take its standard streams", 3: "enter its folder", 4: "start a session"}
_EXEC = 5
SHELL = "/bin/sh"  # what runs a file the kernel will not exec

log = logging.getLogger(__name__)
_library: ctypes.CDLL | None = None
_loaded = False
_load_lock = threading.Lock()


def library() -> ctypes.CDLL | None:
    """The loaded library, or None where it is not built or does not load (said once, in the log)."""
    global _library, _loaded
    if not _loaded:
        with _load_lock:
            if not _loaded:
                _library = _load()
                _loaded = True
    return _library


def available() -> bool:
    return library() is not None


def _load() -> ctypes.CDLL | None:
    if not LIBRARY.is_file():
        log.info("no %s (scripts/setup.sh builds it): commands join their cgroup through /bin/sh", LIBRARY.name)
        return None
    try:
        lib = ctypes.CDLL(str(LIBRARY))
    except OSError as e:
        log.warning("cannot load %s: %s; commands join their cgroup through /bin/sh", LIBRARY, e)
        return None
    strings = ctypes.POINTER(ctypes.c_char_p)
    lib.bflow_spawn.argtypes = [ctypes.c_char_p, strings, strings, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.bflow_spawn.restype = ctypes.c_int
    return lib


class Spawned:
    """A command started by `spawn_into`: the part of subprocess.Popen the local executor
    uses (pid, returncode, poll, wait, stdin). Its exit is reaped once, by whichever of
    poll and wait gets there first."""

    def __init__(self, pid: int, stdin):
        self.pid = pid
        self.stdin = stdin  # a writable file when it was given a pipe for its standard input
        self.returncode: int | None = None
        self._reaping = threading.Lock()

    def poll(self) -> int | None:
        if not self._reaping.acquire(blocking=False):  # another thread waits for it now
            return self.returncode
        try:
            return self._reap(os.WNOHANG)
        finally:
            self._reaping.release()

    def wait(self) -> int:
        with self._reaping:
            return self._reap(0)

    def _reap(self, flags: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped elsewhere: its status is lost, as Popen has it
                self.returncode = 0
            else:
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def spawn_into(procs: Path, program: str, argv: list[str], env: dict[str, str], cwd: Path,
               stdout: int, stderr: int, *, stdin_pipe: bool = False) -> Spawned:
    """Start `program` (the file to exec: a path, as found along PATH) with `argv`, exactly
    `env`, in `cwd` and a session of its own, inside the cgroup whose `cgroup.procs` is
    `procs`; its stdout and stderr are the descriptors given, its stdin /dev/null or, with
    `stdin_pipe`, a pipe (`Spawned.stdin`). A file the kernel will not exec (a script without
    a #! line: ENOEXEC) is run by /bin/sh, as execvp(3) and a shell run it. Raises
    FileNotFoundError or PermissionError when it cannot be executed (as Popen does),
    ExecutorError when the child failed before that."""
    lib = library()
    if lib is None:
        raise ExecutorError(f"{LIBRARY.name} is not built", hint="run scripts/setup.sh")
    words = [os.fsencode(a) for a in argv]
    pairs = [os.fsencode(f"{k}={v}") for k, v in env.items()]
    if any(b"\0" in w for w in (*words, *pairs, os.fsencode(program), os.fsencode(cwd))):
        raise ExecutorError(f"cannot start {argv[0]!r}: a NUL byte in its arguments, environment or folder")
    envp = (ctypes.c_char_p * (len(pairs) + 1))(*pairs, None)
    feed = None
    if stdin_pipe:
        given, feed = os.pipe()
    else:
        given = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            procs_fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:  # not the command's FileNotFoundError
            raise ExecutorError(f"cannot start {argv[0]}: its cgroup is gone: {e}") from None
        try:
            try:
                pid = _spawn(lib, program, words, envp, cwd, procs_fd, given, stdout, stderr, argv[0])
            except OSError as e:
                if e.errno != errno.ENOEXEC:
                    raise
                pid = _spawn(lib, SHELL, [os.fsencode(SHELL), os.fsencode(program), *words[1:]], envp, cwd,
                             procs_fd, given, stdout, stderr, argv[0])
        finally:
            os.close(procs_fd)
    except BaseException:
        if feed is not None:
            os.close(feed)
        raise
    finally:
        os.close(given)
    return Spawned(pid, os.fdopen(feed, "wb") if feed is not None else None)


def _spawn(lib: ctypes.CDLL, program: str, words: list[bytes], envp, cwd: Path, procs: int, stdin: int,
           stdout: int, stderr: int, name: str) -> int:
    """One bflow_spawn: the child's pid. Raises as `spawn_into` says; a child that failed has
    been reaped."""
    args = (ctypes.c_char_p * (len(words) + 1))(*words, None)
    failure = (ctypes.c_int * 2)()
    pid = lib.bflow_spawn(os.fsencode(program), args, envp, os.fsencode(cwd), procs, stdin, stdout, stderr, failure)
    if pid >= 0:
        return pid
    step, code = failure[0], failure[1]
    if step in (0, _EXEC):  # as Popen raises it: FileNotFoundError, PermissionError, ...
        raise OSError(code, os.strerror(code), program)
    raise ExecutorError(f"cannot start {name}: the new process could not {_STEPS.get(step, 'start')}: "
                        f"{os.strerror(code)}")
