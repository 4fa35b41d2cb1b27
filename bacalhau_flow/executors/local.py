"""The local executor: the shard's command as a process of the node, contained.

What the command sees:
- its work directory as the current directory, `$BFLOW_INPUTS` and `$BFLOW_OUTPUTS` in it;
- an environment of its own, never the node's: `PATH` (the node's, or SAFE_PATH), `HOME` and
  `TMPDIR` in folders of the work directory (`home/`, `tmp/`), `LANG` (the node's, or C.UTF-8)
  and `LC_ALL` (when the node sets it), then `execution.env` (the variables the node operator
  passes with `bflow node --pass-env`, `transform.env`, the BFLOW_* ones), nothing else;
- stdout and stderr as pipes that the executor copies into the files, counting: past
  `execution.stream_limit` bytes (the two together) a stream is cut, nothing more is written,
  and the command is killed (`ExecutionResult.cut`).

No process outlives its shard: when the command ends (exit, timeout, kill, a cut stream),
every process it started ends with it, also those that left its process group or session
(`setsid`, a double fork). Two ways, the first that this machine allows:
- **cgroup**: each run gets a cgroup v2 of its own, `bflow-<node pid>/run-<n>` under the
  node's own cgroup; the command enters it before it starts, so all it forks is inside, and
  `cgroup.kill` ends everything in it at once. The child of a vfork joins the cgroup and execs
  the command (executors/spawn.py, a small C library that scripts/setup.sh builds); where it
  is not built, a `/bin/sh` joins it and execs the command (JOIN_CGROUP), which costs a second
  exec, ~0.6 ms a shard of `true`. The cgroup's mkdir and rmdir cost 0.02 ms
  (executors/cgroups.py).
- **subreaper**: where no cgroup can be made (no cgroup v2, no `cgroup.kill`, a read-only
  /sys/fs/cgroup), a small per-run supervisor process (SUPERVISOR, `python -I -S`) makes itself
  the child subreaper of the command, so orphans are re-parented to it, not to init, and kills
  every process below it when the command ends. Costs a Python start-up per shard (10-30 ms)
  (executors/supervisor.py).
A timeout or a cancellation sends SIGTERM to every process of the run, and SIGKILL to all
after KILL_GRACE_SECONDS. Both ways, the commands also end when the node's process ends, a
SIGKILL included.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import ExecutorError
from .base import SCRATCH_DIRS, Execution, ExecutionResult, Executor
from .cgroups import JOIN_CGROUP, Cgroup, CgroupRoot
from . import spawn
from .supervisor import SUPERVISOR

KILL_GRACE_SECONDS = 2.0
DRAIN_SECONDS = 5.0  # after the command ended, how long its pipes may stay open (they close when all is killed)
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_LANG = "C.UTF-8"
CHUNK = 1 << 16


def shard_environment(execution: Execution) -> dict[str, str]:
    """The command's whole environment (see the module docstring); creates $HOME and $TMPDIR."""
    work = execution.outputs_dir.parent
    home, tmp = (work / name for name in SCRATCH_DIRS)
    for folder in (home, tmp):  # a node's work folder has them already (network/work_folders.py)
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass
    env = {"PATH": os.environ.get("PATH") or SAFE_PATH, "HOME": str(home), "TMPDIR": str(tmp),
           "LANG": os.environ.get("LANG") or DEFAULT_LANG}
    if os.environ.get("LC_ALL"):
        env["LC_ALL"] = os.environ["LC_ALL"]
    env.update(execution.env)
    env["BFLOW_INPUTS"] = str(execution.inputs_dir)
    env["BFLOW_OUTPUTS"] = str(execution.outputs_dir)
    if execution.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in execution.gpus)
    return env


class LocalExecutor(Executor):
    name = "local"
    # "auto": a cgroup where this machine allows one, else the subreaper; or force one of them
    containment = "auto"

    def __init__(self) -> None:
        self._running: set[_Run] = set()
        self._lock = threading.Lock()

    def run(self, execution: Execution) -> ExecutionResult:
        env = shard_environment(execution)
        cwd = execution.outputs_dir.parent
        group = CgroupRoot.get().new_group() if self.containment in ("auto", "cgroup") else None
        if group is None and self.containment == "cgroup":
            raise ExecutorError("cannot make a cgroup v2 for the command on this machine",
                                hint="run the node as root on a machine with cgroup v2 (kernel 5.14 or later)")
        # The command is exec'd by the child that joins its cgroup, or by the supervisor: check
        # first that it can be, as Popen would
        found = _locate(execution.cmd[0], env["PATH"], cwd)
        if isinstance(found, tuple):
            if group is not None:
                group.close()
            return _not_started(execution, *found)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = _spawn(execution, found, env, cwd, out_w, err_w, group)
        except BaseException as e:
            for fd in (out_r, err_r):
                os.close(fd)
            if group is not None:
                group.close()
            if isinstance(e, FileNotFoundError):
                return _not_started(execution, f"command not found: {execution.cmd[0]}", 127)
            if isinstance(e, PermissionError):
                return _not_started(execution, f"permission denied: {execution.cmd[0]}", 126)
            if isinstance(e, (OSError, subprocess.SubprocessError)):
                raise ExecutorError(f"cannot start {execution.cmd[0]}: {e}") from e
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        run = _Run(proc, group)
        with self._lock:
            self._running.add(run)
        try:
            if execution.stdin is not None:
                _feed_stdin(proc, execution.stdin)
            with open(execution.stdout_path, "wb", buffering=0) as out, \
                    open(execution.stderr_path, "wb", buffering=0) as err:
                return _supervise(run, {out_r: _Stream("stdout", out), err_r: _Stream("stderr", err)}, execution)
        finally:
            with self._lock:
                self._running.discard(run)
            run.close()

    def kill(self) -> None:
        """SIGTERM every process of every run now, SIGKILL them after the grace; returns at once."""
        with self._lock:
            running = list(self._running)
        for run in running:
            run.stop(graceful=True)


# -- one run: its processes and their end -------------------------------------------------

class _Run:
    """The processes of one run: the command (or its supervisor) and all it started."""

    def __init__(self, proc: subprocess.Popen, group: "Cgroup | None"):
        self.proc, self.group = proc, group
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()

    @property
    def exited(self) -> bool:
        return self.proc.returncode is not None

    def _later(self, name: str, seconds: float, action) -> bool:
        """Run `action` once after `seconds`; False when `name` was armed already."""
        with self._lock:
            if name in self._timers:
                return False
            timer = self._timers[name] = threading.Timer(seconds, action)
        timer.daemon = True
        timer.start()
        return True

    def stop(self, graceful: bool) -> None:
        """End the run: SIGTERM all and SIGKILL them after the grace, or SIGKILL all now."""
        if not graceful:
            self.kill_all()
        elif self._later("kill", KILL_GRACE_SECONDS, self.kill_all):
            if self.group is not None:
                self.group.signal(signal.SIGTERM)
            elif not self.exited:
                _signal(self.proc.pid, signal.SIGTERM)  # the supervisor passes it on to all below it

    def kill_all(self) -> None:
        if self.group is not None:
            self.group.kill()
        elif not self.exited:
            _signal(self.proc.pid, signal.SIGUSR1)  # the supervisor SIGKILLs every process below it
            self._later("last resort", KILL_GRACE_SECONDS + 1.0, self._kill_supervisor)

    def _kill_supervisor(self) -> None:
        """The supervisor did not end after it was asked to kill all: kill its process group."""
        if not self.exited:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            timers = list(self._timers.values())
        for timer in timers:
            timer.cancel()
        if not self.exited:  # only when the executor itself failed mid-run
            self.kill_all()
            self._kill_supervisor()
            self.proc.wait()
        if self.group is not None:
            if not self.group.killed:  # once killed, nothing in it runs on (cgroup.kill)
                self.group.kill()
            self.group.close()


class _Stream:
    def __init__(self, name: str, file):
        self.name, self.file = name, file
        self.written = 0


def _supervise(run: _Run, streams: dict[int, _Stream], execution: Execution) -> ExecutionResult:
    """Copy the command's output into the files until it ends and its pipes close; enforce
    the timeout and the stream limit. Returns how the command ended."""
    proc, limit = run.proc, execution.stream_limit
    deadline = time.monotonic() + execution.timeout if execution.timeout is not None else None
    timed_out = False
    cut: tuple[str, int] | None = None
    total = 0
    # poll(2), not epoll: for three descriptors epoll's own descriptor and a system call per
    # (un)register cost more than the one poll a wait (each system call hands the GIL over)
    sel = selectors.PollSelector()
    for fd in streams:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    pidfd = _pidfd(proc.pid)
    if pidfd is not None:
        sel.register(pidfd, selectors.EVENT_READ)
    open_streams = set(streams)
    drain_until: float | None = None  # set once the command has ended
    try:
        while True:
            now = time.monotonic()
            if drain_until is None:  # running: wake for its end, its output, its deadline
                waits = [0.1] if pidfd is None else []
                if deadline is not None and not timed_out:
                    waits.append(max(0.0, deadline - now))
                wait = min(waits) if waits else None
            elif not open_streams or now >= drain_until:
                break  # all read; or something outside the run holds its pipes: stop reading them
            else:
                wait = drain_until - now
            for key, _ in sel.select(wait):
                if key.fd == pidfd:
                    continue
                try:
                    data = os.read(key.fd, CHUNK)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(key.fd)
                    open_streams.discard(key.fd)
                    continue
                if cut is not None:
                    continue  # cut: whatever comes after is dropped
                stream = streams[key.fd]
                if limit is not None and total + len(data) > limit:
                    data = data[: max(0, limit - total)]
                    cut = (stream.name, stream.written + len(data))
                    run.stop(graceful=False)
                stream.file.write(data)
                stream.written += len(data)
                total += len(data)
            if drain_until is None:
                if proc.poll() is not None:  # it ended: end all it left behind, read what is left
                    if run.group is not None:
                        run.group.kill()
                    if pidfd is not None:
                        sel.unregister(pidfd)
                    drain_until = time.monotonic() + DRAIN_SECONDS
                elif deadline is not None and not timed_out and time.monotonic() >= deadline:
                    timed_out = True
                    run.stop(graceful=True)
    finally:
        sel.close()
        for fd in streams:
            os.close(fd)
        if pidfd is not None:
            os.close(pidfd)
    code = proc.wait()
    if timed_out:
        _note(execution.stderr_path, f"killed after timeout of {execution.timeout:g}s")
        return ExecutionResult(exit_code=_exit_code(code), timed_out=True,
                               error=f"timed out after {execution.timeout:g}s")
    if cut is not None:
        return ExecutionResult(exit_code=_exit_code(code), error=f"{cut[0]} cut at {cut[1]} bytes", cut=cut)
    if code < 0:
        return ExecutionResult(exit_code=128 - code, error=f"killed by signal {-code}")
    return ExecutionResult(exit_code=code)


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # an old kernel: poll instead
        return None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _feed_stdin(proc: subprocess.Popen, text: str) -> None:
    def feed() -> None:
        try:
            proc.stdin.write(text.encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    threading.Thread(target=feed, daemon=True).start()


def _spawn(execution: Execution, program: str, env: dict[str, str], cwd: Path, out_w: int, err_w: int,
           group: "Cgroup | None") -> "subprocess.Popen | spawn.Spawned":
    # In a cgroup, the command enters it before it starts, so all it forks is inside: the child
    # of a vfork joins it, or a shell does. Not a preexec_fn: that makes Python fork() the whole
    # node, 25-75 ms for a node of 400 MB, where both of these spawn by vfork.
    if group is not None and spawn.available():
        return spawn.spawn_into(group.path / "cgroup.procs", program, execution.cmd, env, cwd, out_w, err_w,
                                stdin_pipe=execution.stdin is not None)
    stdin = subprocess.PIPE if execution.stdin is not None else subprocess.DEVNULL
    popen = dict(cwd=cwd, env=env, stdin=stdin, stdout=out_w, stderr=err_w, start_new_session=True)
    if group is None:
        cmd = [sys.executable, "-I", "-S", "-c", SUPERVISOR, str(KILL_GRACE_SECONDS), str(os.getpid()), program,
               *execution.cmd]
        return subprocess.Popen(cmd, **popen)
    script = JOIN_CGROUP if "PWD" in execution.env else JOIN_CGROUP.replace("exec", "unset PWD; exec", 1)
    return subprocess.Popen(["/bin/sh", "-c", script, str(group.path / "cgroup.procs"), *execution.cmd], **popen)


_FOUND: dict[tuple[str, str], str] = {}  # (bare program name, PATH) -> the file it was last found as


def _locate(program: str, path: str, cwd: Path) -> str | tuple[str, int]:
    """The file `program` is executed as, found as Popen would find it in `cwd` (relative paths
    and PATH entries are the shard's folder's, where the command runs); or why it could not be
    executed (message, exit code).

    A bare name found once along absolute PATH entries is looked at again where it was found
    (two system calls), not searched along the whole PATH (one a PATH entry) on every shard;
    when it is not there any more, the search is made again."""
    found = _FOUND.get((program, path))
    if found is not None and os.path.isfile(found) and os.access(found, os.X_OK):
        return found
    if "/" in program:
        folders = [""]
    else:
        folders = [d or "." for d in path.split(os.pathsep)]
    denied = False
    for folder in folders:
        c = os.path.abspath(os.path.join(cwd, folder, program))
        if os.path.isfile(c):
            if os.access(c, os.X_OK):
                if "/" in program:
                    return program
                if os.path.isabs(folder):
                    if len(_FOUND) >= 256:
                        _FOUND.clear()
                    _FOUND[(program, path)] = c
                return c
            denied = True
        elif "/" in program and os.path.isdir(c):  # a bare name: one stat a PATH entry, not two
            denied = True
    if denied:
        return f"permission denied: {program}", 126
    return f"command not found: {program}", 127


def _note(path: Path, message: str) -> None:
    with open(path, "ab") as f:
        f.write(f"\nbflow: {message}\n".encode())


def _not_started(execution: Execution, message: str, code: int) -> ExecutionResult:
    with open(execution.stderr_path, "ab") as err:
        err.write(f"bflow: {message}\n".encode())
    return ExecutionResult(exit_code=code, error=message)
