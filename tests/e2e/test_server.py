"""The managed Prefect server of a $BFLOW_HOME (`bflow server start|stop|status`), as a user's
shell runs it: subprocesses, a home of their own, no PREFECT_* settings. Each server start
costs ~12 s here, so one test walks a home through several steps."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from home_helpers import bflow_in, pid_alive, server_record, stop_server_of, wait_until


def _status(home) -> subprocess.CompletedProcess:
    return bflow_in(home, "server", "status", "--json")


def _gone(pid: int) -> None:
    wait_until(lambda: not pid_alive(pid), 10, f"process {pid} gone")


def test_start_status_stop_and_a_stale_record(tmp_path):
    home = tmp_path / "home"
    try:
        # Given none runs, status says so and exits 1.
        none = _status(home)
        assert none.returncode == 1 and "no Prefect server is running" in none.stderr, none

        # When two starts race, one server starts and both report it.
        with ThreadPoolExecutor(2) as pool:
            started = list(pool.map(lambda _: bflow_in(home, "server", "start", "--json"), range(2)))
        assert [s.returncode for s in started] == [0, 0], [s.stderr for s in started]
        pids = {json.loads(s.stdout)["pid"] for s in started}
        assert len(pids) == 1, started
        [pid] = pids
        assert sum("starting Prefect server on 127.0.0.1:" in s.stderr for s in started) == 1

        # Then status gives its urls and pid, and the UI answers.
        status = _status(home)
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert set(info) == {"api_url", "ui_url", "pid"} and info["pid"] == pid
        assert info["api_url"] == info["ui_url"] + "/api"
        with urllib.request.urlopen(info["ui_url"], timeout=30) as ui:
            assert ui.status == 200

        # When it is stopped, its process is gone and status exits 1 again.
        stopped = bflow_in(home, "server", "stop")
        assert stopped.returncode == 0 and f"stopped the Prefect server (pid {pid})" in stopped.stderr
        _gone(pid)
        assert _status(home).returncode == 1

        # Given a stale record (the pid of a process that exited), start replaces it and says so.
        exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                text=True, check=True)
        dead = int(exited.stdout)
        (home / "prefect-server" / "server.json").write_text(json.dumps({**_record(info, pid), "pid": dead}))
        replaced = bflow_in(home, "server", "start", "--json")
        assert replaced.returncode == 0, replaced.stderr
        [line] = [line for line in replaced.stderr.splitlines() if "replacing" in line]
        assert line.startswith("replacing the Prefect server") and f"its process {dead} is gone" in line
        new_pid = json.loads(replaced.stdout)["pid"]
        assert new_pid != dead and pid_alive(new_pid) and server_record(home)["pid"] == new_pid
        assert bflow_in(home, "server", "stop").returncode == 0
        _gone(new_pid)
        assert _status(home).returncode == 1
    finally:
        stop_server_of(home)


def _record(status: dict, pid: int) -> dict:
    """A whole server.json as flow/server.py writes it, for the server `status` showed."""
    port = int(status["ui_url"].rsplit(":", 1)[1])
    from bacalhau_flow.flow.server import prefect_version

    return {"api_url": status["api_url"], "ui_url": status["ui_url"], "pid": pid, "port": port,
            "prefect_version": prefect_version()}


ONE_SHARD = """\
pipeline: one
input: {url: data}
transform:
  cmd: "echo one"
"""


def test_bflow_run_starts_the_server_once(tmp_path):
    home = tmp_path / "home"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a\n")
    spec = tmp_path / "one.yaml"
    spec.write_text(ONE_SHARD)
    try:
        first = bflow_in(home, "run", spec)
        assert first.returncode == 0, first.stderr
        assert "starting Prefect server" in first.stderr
        pid = server_record(home)["pid"]
        assert pid_alive(pid)  # detached: it outlives the run that started it

        second = bflow_in(home, "run", spec)
        assert second.returncode == 0, second.stderr
        assert "starting Prefect server" not in second.stderr
        assert server_record(home)["pid"] == pid
    finally:
        stop_server_of(home)
