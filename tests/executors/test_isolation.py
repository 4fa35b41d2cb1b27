"""Shard isolation in the local executor: the environment is the shard's own, no process it
started outlives it, and its stdout and stderr stop at the disk limit. Each test runs with
both ways of containing processes: a cgroup v2 per run (where this machine allows one), which
the command joins by itself (executors/spawn.py) or, where that library is not built, through
/bin/sh, and the subreaper supervisor (everywhere)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bacalhau_flow.executors import Execution, spawn
from bacalhau_flow.executors.cgroups import CgroupRoot
from bacalhau_flow.executors.local import SAFE_PATH, LocalExecutor
from bacalhau_flow.testing.executor_contract import ExecutorContract

MODES = ["cgroup", "cgroup-shell", "subreaper"]  # cgroup-shell: joined through /bin/sh (no spawn library)


def executor_for(mode: str) -> LocalExecutor:
    """The executor for `mode`; for cgroup-shell, call `without_spawn_library` too."""
    if mode.startswith("cgroup") and not isinstance(CgroupRoot.get(), CgroupRoot):
        pytest.skip("this machine lets this process make no cgroup v2 (not root, no cgroup.kill, read-only)")
    if mode == "cgroup" and not spawn.available():
        pytest.skip(f"{spawn.LIBRARY.name} is not built (scripts/setup.sh builds it)")
    executor = LocalExecutor()
    executor.containment = "subreaper" if mode == "subreaper" else "cgroup"
    return executor


def without_spawn_library(monkeypatch) -> None:
    monkeypatch.setattr(spawn, "_library", None)
    monkeypatch.setattr(spawn, "_loaded", True)


@pytest.fixture(params=MODES)
def executor(request, monkeypatch):
    if request.param == "cgroup-shell":
        without_spawn_library(monkeypatch)
    return executor_for(request.param)


def make(tmp_path: Path, script: str, **kw) -> Execution:
    work = tmp_path / "work"
    (work / "inputs").mkdir(parents=True, exist_ok=True)
    (work / "outputs").mkdir(exist_ok=True)
    for name in ("stdout", "stderr"):
        (work / name).touch()
    return Execution(cmd=["sh", "-c", script], inputs_dir=work / "inputs", outputs_dir=work / "outputs",
                     stdout_path=work / "stdout", stderr_path=work / "stderr", **kw)


def env_of(ex: Execution) -> dict[str, str]:
    return dict(line.split("=", 1) for line in ex.stdout_path.read_text().splitlines() if "=" in line)


# -- the environment ----------------------------------------------------------------------

def test_the_shard_sees_none_of_the_nodes_environment(executor, tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_X", "1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    ex = make(tmp_path, "env", env={"GREETING": "hola", "BFLOW_SHARD_INDEX": "3"})
    assert executor.run(ex).exit_code == 0, ex.stderr_path.read_text()
    env = env_of(ex)
    assert "SECRET_X" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    work = ex.outputs_dir.parent
    assert env["PATH"] == os.environ["PATH"]
    assert env["HOME"] == str(work / "home") and env["TMPDIR"] == str(work / "tmp")
    assert (work / "home").is_dir() and (work / "tmp").is_dir()
    assert env["LANG"] == (os.environ.get("LANG") or "C.UTF-8")
    assert env["GREETING"] == "hola" and env["BFLOW_SHARD_INDEX"] == "3"
    assert env["BFLOW_INPUTS"] == str(ex.inputs_dir) and env["BFLOW_OUTPUTS"] == str(ex.outputs_dir)
    allowed = {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "GREETING", "BFLOW_SHARD_INDEX", "BFLOW_INPUTS",
               "BFLOW_OUTPUTS", "PWD", "SHLVL", "_", "OLDPWD"}  # the last four: set by sh itself
    assert set(env) <= allowed, set(env) - allowed


def test_a_node_without_path_gives_a_safe_default(executor, tmp_path, monkeypatch):
    monkeypatch.delenv("PATH")
    monkeypatch.delenv("LANG", raising=False)
    ex = make(tmp_path, 'echo "$PATH|$LANG"')
    assert executor.run(ex).exit_code == 0, ex.stderr_path.read_text()
    assert ex.stdout_path.read_text() == f"{SAFE_PATH}|C.UTF-8\n"


def test_variables_the_node_passes_reach_the_shard(tmp_path, monkeypatch):
    """`bflow node --pass-env SECRET_X`: the node hands its value down with the shard's own."""
    from bacalhau_flow.network.messages import InputRef, ShardRequest, TransformRef
    from bacalhau_flow.network.shard_run import run_shard_attempt
    from bacalhau_flow.storage import ContentStore

    monkeypatch.setenv("SECRET_X", "1")
    monkeypatch.setenv("OTHER", "2")
    store = ContentStore(tmp_path / "store")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    request = ShardRequest(job_id="j-env", pipeline="p", shard_index=0, shard_id="s", shard_count=1,
                           transform=TransformRef(cmd=["sh", "-c", "env"], env={"MINE": "3"}),
                           inputs=[InputRef(name="data", url=str(tmp_path / "data"))], datums=[{"data": ["/a.txt"]}])
    for pass_env, expect in (({}, None), ({"SECRET_X": os.environ["SECRET_X"]}, "1")):
        result = run_shard_attempt(request.model_copy(update={"attempt": len(pass_env)}), LocalExecutor(), store,
                                   tmp_path / "work", "n-test", pass_env=pass_env)
        assert result.state == "completed", result.error
        env = dict(line.split("=", 1) for line in store.cat(result.stdout_cid).decode().splitlines() if "=" in line)
        assert env.get("SECRET_X") == expect and "OTHER" not in env and env["MINE"] == "3"


# -- which file runs ----------------------------------------------------------------------

def test_a_script_without_a_first_line_runs_with_sh(executor, tmp_path):
    """As a shell and execvp(3) run it (the kernel refuses it: ENOEXEC), whatever the containment."""
    script = tmp_path / "plain-script"
    script.write_text('echo "no #! line: $1 $#"\n')
    script.chmod(0o755)
    ex = make(tmp_path, "")
    ex.cmd = [str(script), "one two"]
    assert executor.run(ex).exit_code == 0, ex.stderr_path.read_text()
    assert ex.stdout_path.read_text() == "no #! line: one two 1\n"


def test_a_relative_path_entry_is_looked_up_in_the_shards_folder(executor, tmp_path, monkeypatch):
    """The command runs in its work folder, so a relative PATH entry names a folder there, as
    a shell started there would read it; never the node's own folder of the same name."""
    ex = make(tmp_path, "")
    for folder, says in ((ex.outputs_dir.parent, "the shard's"), (tmp_path / "node", "the node's")):
        (folder / "bin").mkdir(parents=True)
        tool = folder / "bin" / "bflow-rel-tool"
        tool.write_text(f"#!/bin/sh\necho {says!r}\n")
        tool.chmod(0o755)
    monkeypatch.chdir(tmp_path / "node")
    ex.env = {"PATH": "bin:/usr/bin:/bin"}
    ex.cmd = ["bflow-rel-tool"]
    assert executor.run(ex).exit_code == 0, ex.stderr_path.read_text()
    assert ex.stdout_path.read_text() == "the shard's\n"
    (ex.outputs_dir.parent / "bin" / "bflow-rel-tool").unlink()  # only the node has one now
    assert executor.run(ex).exit_code == 127
    assert "command not found: bflow-rel-tool" in ex.stderr_path.read_text()


# -- no process outlives its shard ------------------------------------------------------

ESCAPES = ("( sleep 3; touch {d}/F ) & "            # a background subshell, in the process group
           "setsid sh -c 'sleep 3; touch {d}/G' & "  # a new session: out of the process group
           "( setsid sh -c 'sleep 3; touch {d}/H' & ) ; "  # a double fork: re-parented at once
           "echo started")


def test_nothing_the_shard_started_outlives_its_exit(executor, tmp_path):
    ex = make(tmp_path, ESCAPES.format(d=tmp_path))
    started = time.monotonic()
    result = executor.run(ex)
    assert result.exit_code == 0, ex.stderr_path.read_text()
    assert ex.stdout_path.read_text() == "started\n"
    assert time.monotonic() - started < 2.5, "the run waited for the processes it should have killed"
    time.sleep(6)
    assert [p.name for p in tmp_path.iterdir() if p.name in ("F", "G", "H")] == []


def test_nothing_outlives_a_timeout(executor, tmp_path):
    ex = make(tmp_path, ESCAPES.format(d=tmp_path) + "; sleep 30", timeout=0.5)
    result = executor.run(ex)
    assert result.timed_out
    time.sleep(4)
    assert [p.name for p in tmp_path.iterdir() if p.name in ("F", "G", "H")] == []


def test_nothing_outlives_a_kill(executor, tmp_path):
    ex = make(tmp_path, ESCAPES.format(d=tmp_path) + "; sleep 30")
    done = []
    runner = threading.Thread(target=lambda: done.append(executor.run(ex)), daemon=True)
    runner.start()
    time.sleep(0.5)
    executor.kill()
    runner.join(timeout=10)
    assert done and done[0].exit_code != 0
    time.sleep(4)
    assert [p.name for p in tmp_path.iterdir() if p.name in ("F", "G", "H")] == []


# A node of its own: runs `sh -c SCRIPT` with the local executor in mode MODE, in folder WORK.
NODE = """
import sys
from pathlib import Path
from bacalhau_flow.executors import Execution, spawn
from bacalhau_flow.executors.local import LocalExecutor
mode, work, script = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if mode == "cgroup-shell":
    spawn._library, spawn._loaded = None, True
executor = LocalExecutor()
executor.containment = "subreaper" if mode == "subreaper" else "cgroup"
executor.run(Execution(cmd=["sh", "-c", script], inputs_dir=work / "inputs", outputs_dir=work / "outputs",
                       stdout_path=work / "stdout", stderr_path=work / "stderr"))
"""


@pytest.mark.parametrize("mode", MODES)
def test_nothing_outlives_a_node_killed_by_sigkill(mode, tmp_path):
    """The node (here a process of its own) dies with no chance to clean up, as a `bflow run`
    or `bflow node` killed by SIGKILL: its command and all the command started end too."""
    executor_for(mode)  # skips where this machine makes no cgroup
    ex = make(tmp_path, "")
    work = ex.outputs_dir.parent
    node = subprocess.Popen([sys.executable, "-c", NODE, mode, str(work), ESCAPES.format(d=tmp_path) + "; sleep 30"],
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while ex.stdout_path.read_text() != "started\n" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ex.stdout_path.read_text() == "started\n", ex.stderr_path.read_text()
        os.kill(node.pid, signal.SIGKILL)
        node.wait()
    finally:
        node.kill()
    time.sleep(4)  # the escaped processes touch their files 3 s after they started
    assert [p.name for p in tmp_path.iterdir() if p.name in ("F", "G", "H")] == []


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(executor, tmp_path):
    ex = make(tmp_path, "trap '' TERM; setsid sh -c \"trap '' TERM; sleep 30\" & sleep 30", timeout=0.5)
    started = time.monotonic()
    result = executor.run(ex)
    assert result.timed_out and time.monotonic() - started < 8


def test_the_run_leaves_no_cgroup_behind(tmp_path):
    executor = executor_for("cgroup")
    assert executor.run(make(tmp_path, "sleep 30 & setsid sleep 30 & true")).exit_code == 0
    root = CgroupRoot.get().path
    assert [p.name for p in root.iterdir() if p.is_dir()] == []


# -- stdout and stderr stop at the limit -----------------------------------------------------

def test_a_stream_past_its_limit_is_cut_and_the_command_killed(executor, tmp_path):
    ex = make(tmp_path, "echo to-stderr >&2; head -c 50000000 /dev/zero; echo after > $BFLOW_OUTPUTS/after",
              stream_limit=1 << 20)
    result = executor.run(ex)
    assert result.cut == ("stdout", (1 << 20) - len("to-stderr\n"))
    assert result.exit_code != 0 and "stdout cut at" in result.error
    assert ex.stdout_path.stat().st_size + ex.stderr_path.stat().st_size == 1 << 20
    assert not (ex.outputs_dir / "after").exists()


def test_a_command_writing_without_end_is_stopped_at_the_limit(executor, tmp_path):
    ex = make(tmp_path, "while :; do echo noise >&2; done", stream_limit=100_000, timeout=30)
    started = time.monotonic()
    result = executor.run(ex)
    assert result.cut and result.cut[0] == "stderr" and not result.timed_out
    assert time.monotonic() - started < 10
    assert ex.stderr_path.stat().st_size == 100_000


def test_within_the_limit_nothing_is_cut(executor, tmp_path):
    ex = make(tmp_path, "head -c 1000 /dev/zero", stream_limit=1000)
    result = executor.run(ex)
    assert result.exit_code == 0 and result.cut is None
    assert ex.stdout_path.stat().st_size == 1000


# -- the executor contract, with the subreaper (test_local_contract.py runs the default) ----

SCRIPTS = {
    "hello": "echo hello",
    "fail": "echo partial; echo broken >&2; exit 5",
    "copy_input": 'cp "$BFLOW_INPUTS/in/data.txt" "$BFLOW_OUTPUTS/copied.txt"',
    "env": 'echo "$GREETING $BFLOW_SHARD_INDEX"',
    "stdin": "cat",
    "spin": "while :; do sleep 0.1; done",
    "write_input": 'echo changed > "$BFLOW_INPUTS/in/data.txt"',
}


class TestSubreaperContract(ExecutorContract):
    read_only_inputs_enforced = os.geteuid() != 0

    @pytest.fixture
    def executor(self):
        return executor_for("subreaper")

    def program(self, behaviour):
        return {"cmd": ["sh", "-c", SCRIPTS[behaviour]]}


def test_the_subreaper_reports_a_missing_command_as_popen_does(tmp_path):
    ex = make(tmp_path, "")
    ex.cmd = ["no-such-command-bflow"]
    result = executor_for("subreaper").run(ex)
    assert result.exit_code == 127 and "command not found: no-such-command-bflow" in ex.stderr_path.read_text()


def test_without_cgroups_the_default_falls_back_to_the_subreaper(tmp_path, monkeypatch):
    from bacalhau_flow.executors import cgroups, local

    monkeypatch.setattr(cgroups.CgroupRoot, "get", classmethod(lambda cls: cgroups.NoCgroups()))
    spawned = []
    real = local.subprocess.Popen
    monkeypatch.setattr(local.subprocess, "Popen", lambda cmd, **kw: spawned.append(cmd) or real(cmd, **kw))
    ex = make(tmp_path, "setsid sleep 30 & echo ok")
    assert LocalExecutor().run(ex).exit_code == 0 and ex.stdout_path.read_text() == "ok\n"
    assert spawned[0][:2] == [local.sys.executable, "-I"]
