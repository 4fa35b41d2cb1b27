"""`bflow` as a user's shell runs it, in a $BFLOW_HOME of the test's own (so with a managed
Prefect server of its own), and plain-HTTP looks at that server's API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


def home_env(home: Path) -> dict:
    """The environment of a user's shell with BFLOW_HOME=`home` and no Prefect settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["BFLOW_HOME"] = str(home)
    return env


def bflow_in(home: Path, *args, timeout: float = 180) -> subprocess.CompletedProcess:
    """`bflow ARGS` as a subprocess in `home`; its exit status and output."""
    return subprocess.run([sys.executable, "-m", "bacalhau_flow.cli", *map(str, args)], env=home_env(home),
                          capture_output=True, text=True, timeout=timeout, check=False)


def bflow_started_in(home: Path, *args) -> subprocess.Popen:
    """`bflow ARGS` started in `home`, stdout and stderr together on its stdout."""
    return subprocess.Popen([sys.executable, "-m", "bacalhau_flow.cli", *map(str, args)], env=home_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class Lines:
    """The lines a process writes to stdout, read by a thread, so tests can wait for one."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            time.sleep(0.1)
        raise AssertionError(f"no line with {text!r} within {timeout:g}s; got:\n" + "\n".join(self.lines))


def server_record(home: Path) -> dict:
    """The managed server's `server.json` in `home` ({"api_url", "ui_url", "pid", ...})."""
    return json.loads((home / "prefect-server" / "server.json").read_text())


def api_get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def api_post(url: str, body: dict):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


def wait_until(check, timeout: float, what: str, every: float = 0.5):
    """`check()`'s first truthy answer within `timeout` s; AssertionError naming `what` (and
    the last answer) when none came."""
    deadline = time.monotonic() + timeout
    answer = None
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        time.sleep(every)
    raise AssertionError(f"{what} not seen within {timeout:g}s (last: {answer!r})")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_server_of(home: Path) -> None:
    """`bflow server stop` in `home`: no server is left behind by a test."""
    if (home / "prefect-server" / "server.json").exists():
        bflow_in(home, "server", "stop", timeout=60)
