"""executors/spawn.py: a command started straight inside its cgroup by the small C library
(spawn_into_cgroup.c), read back from /proc as the command itself sees it."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from bacalhau_flow.errors import ExecutorError
from bacalhau_flow.executors import spawn
from bacalhau_flow.executors.cgroups import CgroupRoot


def test_ci_builds_the_library():
    if os.environ.get("CI") != "true":
        pytest.skip("checked in CI, where scripts/setup.sh has built it")
    assert spawn.available(), f"{spawn.LIBRARY} is not built or does not load"


@pytest.fixture
def group():
    root = CgroupRoot.get()
    if not isinstance(root, CgroupRoot):
        pytest.skip("this machine lets this process make no cgroup v2 (not root, no cgroup.kill, read-only)")
    if not spawn.available():
        pytest.skip(f"{spawn.LIBRARY.name} is not built (scripts/setup.sh builds it)")
    made = root.new_group()
    yield made
    made.kill()
    made.close()


def run(group, argv: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: bytes | None = None,
        program: str | None = None) -> tuple[int, str]:
    """Start argv in `group`, feed it `stdin`; its exit code and what it wrote to stdout and stderr."""
    read, write = os.pipe()
    try:
        child = spawn.spawn_into(group.path / "cgroup.procs", program or argv[0], argv, env or {}, cwd, write,
                                 write, stdin_pipe=stdin is not None)
    finally:
        os.close(write)
    if stdin is not None:
        child.stdin.write(stdin)
        child.stdin.close()
    out = b""
    while chunk := os.read(read, 65536):
        out += chunk
    os.close(read)
    return child.wait(), out.decode()


def test_the_command_starts_inside_its_cgroup_in_a_session_of_its_own(group, tmp_path):
    code, out = run(group, ["/bin/sh", "-c", "cat /proc/$$/cgroup; cut -d' ' -f6 /proc/$$/stat; echo $$"], tmp_path)
    assert code == 0
    *cgroups, session, pid = out.split()
    assert f"0::/{group.path.parent.name}/{group.path.name}" in cgroups
    assert session == pid  # setsid: its own session, so its process group too


def test_it_gets_exactly_its_environment_folder_arguments_and_stdin(group, tmp_path):
    code, out = run(group, ["/usr/bin/env"], tmp_path, env={"A": "1", "B": "two words"})
    assert (code, out) == (0, "A=1\nB=two words\n")
    code, out = run(group, ["/bin/sh", "-c", 'pwd; printf "%s|" "$@"; read line; echo "<$line>"; exit 3',
                            "sh", "x y", ""], tmp_path, stdin=b"fed\n")
    assert (code, out) == (3, f"{tmp_path}\nx y||<fed>\n")
    assert run(group, ["/bin/cat"], tmp_path) == (0, "")  # no stdin pipe: /dev/null


def test_it_inherits_no_descriptor_signal_handler_ignored_signal_or_mask(group, tmp_path):
    leaked = os.open("/dev/null", os.O_RDONLY)
    os.dup2(leaked, 77)  # inheritable, as a library could leave one
    old = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # as Python sets it
        code, out = run(group, ["/bin/sh", "-c", "ls /proc/$$/fd; grep -E '^Sig(Blk|Ign|Cgt)' /proc/$$/status"],
                        tmp_path)
    finally:
        signal.signal(signal.SIGUSR1, old)
        os.close(leaked)
        os.close(77)
    assert code == 0
    lines = out.split()
    assert "77" not in lines and lines[:3] == ["0", "1", "2"], out
    fields = dict(zip(lines[-6::2], lines[-5::2]))
    assert int(fields["SigBlk:"], 16) == 0 and int(fields["SigIgn:"], 16) == 0, out


def test_what_cannot_start_raises_as_popen_does_and_leaves_no_child(group, tmp_path):
    with pytest.raises(FileNotFoundError):
        spawn.spawn_into(group.path / "cgroup.procs", str(tmp_path / "missing"), ["missing"], {}, tmp_path, 1, 2)
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):
        spawn.spawn_into(group.path / "cgroup.procs", str(script), ["x"], {}, tmp_path, 1, 2)
    with pytest.raises(ExecutorError, match="could not enter its folder"):
        spawn.spawn_into(group.path / "cgroup.procs", "/bin/true", ["true"], {}, tmp_path / "gone", 1, 2)
    with pytest.raises(ExecutorError, match="its cgroup is gone"):
        spawn.spawn_into(tmp_path / "cgroup.procs", "/bin/true", ["true"], {}, tmp_path, 1, 2)
    assert group.pids() == []  # each failed child was reaped


def test_a_killed_command_reads_as_popen_has_it_and_poll_does_not_block_beside_wait(group, tmp_path):
    child = spawn.spawn_into(group.path / "cgroup.procs", "/bin/sleep", ["sleep", "30"], {}, tmp_path, 1, 2)
    assert child.poll() is None and group.pids() == [child.pid]
    waited = []
    waiter = threading.Thread(target=lambda: waited.append(child.wait()))
    waiter.start()
    time.sleep(0.2)
    assert child.poll() is None  # wait() holds the reaping: poll answers at once
    group.kill()
    waiter.join(10)
    assert waited == [-signal.SIGKILL] and child.returncode == -signal.SIGKILL and child.poll() == -signal.SIGKILL


def test_a_nul_byte_is_refused_before_anything_starts(group, tmp_path):
    for argv, env in ((["/bin/echo", "a\0b"], {}), (["/bin/true"], {"A": "x\0y"})):
        with pytest.raises(ExecutorError, match="NUL byte"):
            spawn.spawn_into(group.path / "cgroup.procs", argv[0], argv, env, tmp_path, 1, 2)
    assert group.pids() == []
