"""The local executor: the shard's command as a subprocess of the node.

The command runs in its own process group, in the shard's work directory, with
`$BFLOW_INPUTS` and `$BFLOW_OUTPUTS` pointing into it. stdout and stderr stream into
files. A timeout or a cancellation kills the whole process group, so a shell's
children do not outlive it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

from ..errors import ExecutorError
from .base import Execution, ExecutionResult, Executor

KILL_GRACE_SECONDS = 2.0


class LocalExecutor(Executor):
    name = "local"

    def __init__(self) -> None:
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def run(self, execution: Execution) -> ExecutionResult:
        env = dict(os.environ)
        env.update(execution.env)
        env["BFLOW_INPUTS"] = str(execution.inputs_dir)
        env["BFLOW_OUTPUTS"] = str(execution.outputs_dir)
        if execution.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in execution.gpus)
        stdin = subprocess.PIPE if execution.stdin is not None else subprocess.DEVNULL
        with open(execution.stdout_path, "wb") as out, open(execution.stderr_path, "wb") as err:
            try:
                proc = subprocess.Popen(
                    execution.cmd,
                    cwd=execution.outputs_dir.parent,
                    env=env,
                    stdin=stdin,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            except FileNotFoundError:
                return _not_started(execution, f"command not found: {execution.cmd[0]}", 127)
            except PermissionError:
                return _not_started(execution, f"permission denied: {execution.cmd[0]}", 126)
            except OSError as e:
                raise ExecutorError(f"cannot start {execution.cmd[0]}: {e}") from e
            with self._lock:
                self._running.add(proc)
            try:
                return self._wait(proc, execution)
            finally:
                with self._lock:
                    self._running.discard(proc)

    def _wait(self, proc: subprocess.Popen, execution: Execution) -> ExecutionResult:
        if execution.stdin is not None:
            _feed_stdin(proc, execution.stdin)
        try:
            code = proc.wait(timeout=execution.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            with open(execution.stderr_path, "ab") as err:
                err.write(f"\nbflow: killed after timeout of {execution.timeout:g}s\n".encode())
            return ExecutionResult(
                exit_code=proc.returncode if proc.returncode is not None else -9,
                timed_out=True,
                error=f"timed out after {execution.timeout:g}s",
            )
        finally:
            _kill_group(proc, only_leftovers=True)
        if code < 0:
            return ExecutionResult(exit_code=128 - code, error=f"killed by signal {-code}")
        return ExecutionResult(exit_code=code)

    def kill(self) -> None:
        with self._lock:
            running = list(self._running)
        for proc in running:
            _kill_group(proc)


def _feed_stdin(proc: subprocess.Popen, text: str) -> None:
    def feed() -> None:
        try:
            proc.stdin.write(text.encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    threading.Thread(target=feed, daemon=True).start()


def _kill_group(proc: subprocess.Popen, only_leftovers: bool = False) -> None:
    """SIGTERM the process group, then SIGKILL what is left after a short grace."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    if only_leftovers:
        # The leader has exited; anything still in its group (background children) is killed.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            if sig == signal.SIGTERM:
                # Leader gone; make sure no child kept the group alive.
                _kill_group(proc, only_leftovers=True)
            return
        except subprocess.TimeoutExpired:
            continue


def _not_started(execution: Execution, message: str, code: int) -> ExecutionResult:
    with open(execution.stderr_path, "ab") as err:
        err.write(f"bflow: {message}\n".encode())
    return ExecutionResult(exit_code=code, error=message)
