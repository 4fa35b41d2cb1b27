"""The local executor: the shard view, streams to files, exit codes, timeouts."""

import time
from pathlib import Path

import pytest

from bacalhau_flow.executors import Execution, get_executor
from bacalhau_flow.executors.local import LocalExecutor


def make(tmp_path: Path, cmd, **kw) -> Execution:
    (tmp_path / "inputs").mkdir(exist_ok=True)
    (tmp_path / "outputs").mkdir(exist_ok=True)
    return Execution(cmd=cmd, inputs_dir=tmp_path / "inputs", outputs_dir=tmp_path / "outputs",
                     stdout_path=tmp_path / "stdout", stderr_path=tmp_path / "stderr", **kw)


def test_stdout_stderr_and_exit_code_are_kept_separately(tmp_path):
    ex = make(tmp_path, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    result = LocalExecutor().run(ex)
    assert result.exit_code == 7
    assert (tmp_path / "stdout").read_text() == "out\n"
    assert (tmp_path / "stderr").read_text() == "err\n"


def test_shard_sees_inputs_outputs_and_env(tmp_path):
    ex = make(tmp_path, ["sh", "-c", 'echo "$GREETING $BFLOW_SHARD_INDEX" > "$BFLOW_OUTPUTS/o.txt"; echo $BFLOW_INPUTS'],
              env={"GREETING": "hello", "BFLOW_SHARD_INDEX": "3"})
    assert LocalExecutor().run(ex).exit_code == 0
    assert (tmp_path / "outputs" / "o.txt").read_text() == "hello 3\n"
    assert (tmp_path / "stdout").read_text().strip() == str(tmp_path / "inputs")


def test_stdin_is_piped_to_the_command(tmp_path):
    ex = make(tmp_path, ["tr", "a-z", "A-Z"], stdin="shout\n")
    assert LocalExecutor().run(ex).exit_code == 0
    assert (tmp_path / "stdout").read_text() == "SHOUT\n"


def test_command_not_found_is_a_failed_result_with_a_clear_stderr(tmp_path):
    result = LocalExecutor().run(make(tmp_path, ["no-such-command-bflow"]))
    assert result.exit_code == 127
    assert "command not found: no-such-command-bflow" in (tmp_path / "stderr").read_text()


def test_a_command_found_once_is_looked_for_again_when_it_is_gone_or_not_runnable(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "bflow-test-tool"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    work = tmp_path / "w"
    work.mkdir()
    assert LocalExecutor().run(make(work, ["bflow-test-tool"])).exit_code == 0  # found, and remembered
    tool.chmod(0o644)
    assert LocalExecutor().run(make(work, ["bflow-test-tool"])).exit_code == 126
    assert "permission denied: bflow-test-tool" in (work / "stderr").read_text()
    tool.unlink()
    assert LocalExecutor().run(make(work, ["bflow-test-tool"])).exit_code == 127
    assert "command not found: bflow-test-tool" in (work / "stderr").read_text()


def test_timeout_kills_the_whole_process_group(tmp_path):
    marker = tmp_path / "child-survived"
    # The shell starts a background child that would write the marker after 3 s.
    ex = make(tmp_path, ["sh", "-c", f"(sleep 3; touch {marker}) & sleep 30"], timeout=0.5)
    started = time.monotonic()
    result = LocalExecutor().run(ex)
    assert result.timed_out and time.monotonic() - started < 5
    assert "timeout" in (tmp_path / "stderr").read_text()
    time.sleep(3.5)
    assert not marker.exists()


def test_gpus_become_cuda_visible_devices(tmp_path):
    ex = make(tmp_path, ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"], gpus=[0, 2])
    LocalExecutor().run(ex)
    assert (tmp_path / "stdout").read_text() == "0,2\n"


def test_executors_are_found_by_name_and_an_unknown_one_is_a_clear_error():
    assert isinstance(get_executor("local"), LocalExecutor)
    from bacalhau_flow.errors import BflowError
    from bacalhau_flow.executors.registry import available_executors

    assert {"local", "docker", "wasm"} <= set(available_executors())
    with pytest.raises(BflowError, match="no-such"):
        get_executor("no-such")
