"""The contract every executor keeps: one suite, run against local, docker and wasm.

Subclass `ExecutorContract` in a test module, give it an `executor` fixture, and implement
`program(behaviour)`: the Execution fields (cmd, image, module, ...) that make this executor's
command do one of the behaviours below. The suite then checks the shard view of PRODUCT.md
section 2 the same way for each executor:

  hello        print "hello" and a newline to stdout, exit 0
  fail         print "partial\\n" to stdout and "broken\\n" to stderr, exit 5
  copy_input   copy the input file `in/data.txt` to the output file `copied.txt`
  env          print the value of $GREETING, a space, and $BFLOW_SHARD_INDEX, then a newline
  stdin        copy stdin to stdout
  spin         run until killed (for timeouts and cancellation)
  write_input  try to overwrite the input file `in/data.txt` with "changed"; the executor
               must not let it (a non-zero exit, or the write silently going nowhere)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ..executors import Execution, ExecutionResult, Executor

BEHAVIOURS = ("hello", "fail", "copy_input", "env", "stdin", "spin", "write_input")
INPUT_TEXT = "line one\nline two\n"


class ExecutorContract:
    """Shared tests; a subclass provides the `executor` fixture and `program`."""

    # Whether a command cannot change its inputs. The local executor only has file modes,
    # which root ignores; docker mounts them read-only and wasm preopens them read-only.
    read_only_inputs_enforced = True

    def program(self, behaviour: str) -> dict[str, Any]:
        """Execution fields for `behaviour` (at least `cmd`; `image` or `module` where needed)."""
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------
    def execution(self, tmp_path: Path, behaviour: str, **extra: Any) -> Execution:
        work = tmp_path / f"work-{behaviour}"
        inputs, outputs = work / "inputs", work / "outputs"
        (inputs / "in").mkdir(parents=True, exist_ok=True)
        outputs.mkdir(parents=True, exist_ok=True)
        data = inputs / "in" / "data.txt"
        if not data.exists():
            data.write_text(INPUT_TEXT)
            data.chmod(0o444)
            (inputs / "in").chmod(0o555)
        fields = {"env": {}, **self.program(behaviour), **extra}
        return Execution(inputs_dir=inputs, outputs_dir=outputs, stdout_path=work / "stdout",
                         stderr_path=work / "stderr", **fields)

    def run(self, executor: Executor, execution: Execution) -> ExecutionResult:
        execution.stdout_path.touch()
        execution.stderr_path.touch()
        return executor.run(execution)

    # -- the contract ---------------------------------------------------------------
    def test_stdout_is_captured(self, executor, tmp_path):
        ex = self.execution(tmp_path, "hello")
        result = self.run(executor, ex)
        assert result.exit_code == 0 and not result.timed_out
        assert ex.stdout_path.read_text() == "hello\n"

    def test_a_failing_command_keeps_stdout_stderr_and_exit_code(self, executor, tmp_path):
        ex = self.execution(tmp_path, "fail")
        result = self.run(executor, ex)
        assert result.exit_code == 5
        assert ex.stdout_path.read_text() == "partial\n"
        assert ex.stderr_path.read_text().startswith("broken\n")

    def test_reads_inputs_and_writes_outputs(self, executor, tmp_path):
        ex = self.execution(tmp_path, "copy_input")
        assert self.run(executor, ex).exit_code == 0, ex.stderr_path.read_text()
        assert (ex.outputs_dir / "copied.txt").read_text() == INPUT_TEXT

    def test_sees_its_environment(self, executor, tmp_path):
        ex = self.execution(tmp_path, "env", env={"GREETING": "hola", "BFLOW_SHARD_INDEX": "7"})
        assert self.run(executor, ex).exit_code == 0, ex.stderr_path.read_text()
        assert ex.stdout_path.read_text() == "hola 7\n"

    def test_stdin_is_given_to_the_command(self, executor, tmp_path):
        ex = self.execution(tmp_path, "stdin", stdin="piped text\n")
        assert self.run(executor, ex).exit_code == 0, ex.stderr_path.read_text()
        assert ex.stdout_path.read_text() == "piped text\n"

    def test_inputs_are_read_only(self, executor, tmp_path):
        if not self.read_only_inputs_enforced:
            pytest.skip("this executor cannot keep this user from writing to its inputs")
        ex = self.execution(tmp_path, "write_input")
        self.run(executor, ex)
        assert (ex.inputs_dir / "in" / "data.txt").read_text() == INPUT_TEXT

    def test_a_timeout_stops_the_command(self, executor, tmp_path):
        ex = self.execution(tmp_path, "spin", timeout=1.0)
        started = time.monotonic()
        result = self.run(executor, ex)
        assert result.timed_out and result.exit_code != 0
        assert time.monotonic() - started < 15
        assert "timeout" in ex.stderr_path.read_text()

    def test_kill_stops_a_running_command(self, executor, tmp_path):
        ex = self.execution(tmp_path, "spin")
        done: list[ExecutionResult] = []
        runner = threading.Thread(target=lambda: done.append(self.run(executor, ex)), daemon=True)
        runner.start()
        time.sleep(1.5)
        executor.kill()
        runner.join(timeout=15)
        assert done, "the command was still running 15 s after kill()"
        assert done[0].exit_code != 0

