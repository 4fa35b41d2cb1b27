"""The long-running Prefect server that `bflow serve` manages (schedules need one).

Its state lives under `$BFLOW_HOME/prefect-server/`: the SQLite database, Prefect's home
and `server.json` ({"url", "pid"}) while it runs, so `bflow deploy` can find it. It is a
database of its own, apart from the one `bflow run` uses in Prefect's ephemeral mode, so a
one-off run and a served server never write one SQLite file at the same time.

Nothing here imports Prefect: the server is a child process (`prefect server start`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import BflowError
from ..home import bflow_home


class ServerError(BflowError):
    """The Prefect server could not be started, or cannot be reached."""


def server_home() -> Path:
    return bflow_home() / "prefect-server"


def _state_file() -> Path:
    return server_home() / "server.json"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers at `url` (…/api)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def running_server_url() -> str | None:
    """The API url of the server a `bflow serve` of this $BFLOW_HOME runs, if it answers."""
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None
    url = state.get("url")
    return url if url and healthy(url) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrefectServer:
    """A `prefect server start` child process on a free local port."""

    url: str
    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, timeout: float = 120.0, scheduler_loop_seconds: float = 5.0) -> PrefectServer:
        """Start a server with its SQLite database under `server_home()`; wait until it answers.
        Raises ServerError when it exits or does not answer within `timeout` seconds."""
        home = server_home()
        home.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            # Prefect's scheduler looks for deployments that need runs every 60 s by default;
            # short intervals need it to look more often, or they run dry between looks.
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": str(scheduler_loop_seconds),
            # ... and a deployment just (re)deployed gets its first runs within ~2 s, not 5.
            "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
        })
        log = home / "server.log"
        prefect = Path(sys.executable).with_name("prefect")
        cmd = [str(prefect)] if prefect.exists() else [sys.executable, "-m", "prefect"]
        cmd += ["server", "start", "--host", "127.0.0.1", "--port", str(port)]
        with open(log, "ab") as out:
            process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                       start_new_session=True)
        server = cls(f"http://127.0.0.1:{port}/api", process, log)
        deadline = time.monotonic() + timeout
        try:
            while not healthy(server.url, timeout=1.0):
                if process.poll() is not None:
                    raise ServerError(f"the Prefect server exited at start-up (status {process.returncode})",
                                      hint=f"its log: {log}")
                if time.monotonic() > deadline:
                    raise ServerError(f"the Prefect server did not answer within {timeout:.0f} s",
                                      hint=f"its log: {log}", retryable=True)
                time.sleep(0.25)
        except BaseException:  # also Ctrl-C while waiting: leave no server behind
            server.stop()
            raise
        _state_file().write_text(json.dumps({"url": server.url, "pid": process.pid}))
        return server

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout` s) and forget its url."""
        try:
            state = json.loads(_state_file().read_text())
            if state.get("pid") == self.process.pid:
                _state_file().unlink()
        except (OSError, ValueError):
            pass
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
