"""What the benches share about the Prefect server their runs report to (bflow's managed one,
found by its `server.json`): waiting until it has digested the runs before, since it shares
this machine's cores, and stopping it at the end when the bench started it, since an idle
server left behind keeps using CPU and skews later runs."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def server_pid() -> int:
    """The pid of the managed Prefect server of this $BFLOW_HOME (0 when none is recorded)."""
    from bacalhau_flow.flow.server import server_home

    try:
        return json.loads((server_home() / "server.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return 0


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of process `pid` so far (0 when it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(limit: float = 120.0) -> None:
    """Wait (at most `limit` s) until the Prefect server has digested the events of the run
    before, so that no run pays for the one before it."""
    pid = server_pid()
    deadline, last = time.monotonic() + limit, cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last < 0.05:
            return
        last = now


def stop_own_server(own_home: bool) -> None:
    """With `own_home` (the bench made its $BFLOW_HOME), send Prefect's queued logs and events,
    then stop the server before its home goes."""
    if not own_home:
        return
    if "prefect" in sys.modules:
        from prefect._internal.concurrency.services import QueueService

        QueueService.drain_all(timeout=10)
    from bacalhau_flow.flow.server import stop_server

    stop_server()
