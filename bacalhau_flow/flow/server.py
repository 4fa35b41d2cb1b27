"""The local Prefect server that every `bflow` command of one $BFLOW_HOME shares.

The first command that needs Prefect starts it detached (`prefect server start` in a session
of its own, so it outlives that command) and every later command connects to it: a warm
`bflow run` pays a connection, not a server start. `bflow server start|stop|status` manage it
by hand. Its state lives under `$BFLOW_HOME/prefect-server/`: the SQLite database, Prefect's
home, the UI's static files, `server.log`, and `server.json` ({"api_url", "ui_url", "pid",
"port", "prefect_version"}) while it runs.

A recorded server is used only when its pid is alive, its API answers and it runs this
Prefect version; otherwise it is replaced, and one line says why. Starting holds a lock
(`start.lock`), so two commands starting at once start one server.

A server start takes ~10 s on 2 cores, most of it the server's own imports and migrations (a
new home's database starts as a copy of one migrated once per Prefect version, flow/prefect_db.py);
`start_server` returns as soon as the process is spawned (its url is known then), so the
command can import Prefect meanwhile, and `Starting.ready()` waits for it to answer. The lock
is held until then; a command that exits first stops the half-started server.

Nothing here imports Prefect: the server is a child process, and the checks are plain HTTP.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import version as package_version
from pathlib import Path

from ..errors import BflowError
from ..home import bflow_home
from .prefect_db import seed

START_TIMEOUT = 180.0  # seconds; a cold start here takes 10-20 s on 2 busy cores
PORT_VARIABLE = "BFLOW_PREFECT_PORT"  # a fixed port for the managed server (default: a free one)


class ServerError(BflowError):
    """The Prefect server could not be started, or cannot be reached."""


@dataclass
class ServerInfo:
    api_url: str
    ui_url: str
    pid: int
    port: int
    prefect_version: str

    def to_json(self) -> dict:
        return asdict(self)


def server_home() -> Path:
    return bflow_home() / "prefect-server"


def _state_file() -> Path:
    return server_home() / "server.json"


def prefect_version() -> str:
    return package_version("prefect")


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers at `url` (…/api)."""
    return _get(url.rstrip("/") + "/health", timeout) is not None


def _get(url: str, timeout: float) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read() if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _is_prefect_server(pid: int) -> bool:
    """Whether `pid` is a `prefect server start` (so a reused pid is never killed)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"server" in cmdline and any(b"prefect" in part for part in cmdline)


def _read_state() -> ServerInfo | None:
    try:
        return ServerInfo(**json.loads(_state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _why_not_usable(info: ServerInfo) -> str | None:
    """None when the recorded server can be used, else why not (said to the user)."""
    if not _pid_alive(info.pid):
        return f"its process {info.pid} is gone"
    answer = _get(info.api_url.rstrip("/") + "/admin/version", timeout=5.0)
    if answer is None:
        return f"it does not answer at {info.api_url}"
    running = answer.decode(errors="replace").strip().strip('"')
    if running != prefect_version():
        return f"it runs Prefect {running}, this bflow uses {prefect_version()}"
    return None


def status() -> ServerInfo | None:
    """The managed server of this $BFLOW_HOME when it runs and can be used, else None."""
    info = _read_state()
    return info if info is not None and _why_not_usable(info) is None else None


def ensure_server(echo: Callable[[str], None] | None = None, port: int | None = None) -> ServerInfo:
    """The managed server, started (detached) when none runs or the recorded one cannot be
    used, once it answers. `echo` gets one line for what is done ("starting Prefect server
    ...", "replacing ..."). Raises ServerError when it cannot be started."""
    return start_server(echo, port).ready()


def start_server(echo: Callable[[str], None] | None = None, port: int | None = None) -> Starting:
    """As `ensure_server`, without waiting for a server it starts to answer: call `ready()`
    on what it returns before using the API. Raises ServerError when it cannot be started."""
    say = echo or (lambda line: None)
    lock = _lock()
    try:
        info = _read_state()
        if info is not None:
            why = _why_not_usable(info)
            if why is None:
                _unlock(lock)
                return Starting(info)
            say(f"replacing the Prefect server of {server_home()}: {why}")
            _terminate(info)
        return _spawn(say, port or _configured_port(), lock)
    except BaseException:
        _unlock(lock)
        raise


def stop_server(timeout: float = 20.0) -> ServerInfo | None:
    """Stop the managed server (SIGTERM, then SIGKILL after `timeout` s) and forget it.
    Returns what was stopped, or None when nothing was recorded."""
    with _start_lock():
        info = _read_state()
        if info is None:
            return None
        _terminate(info, timeout)
        return info


def _configured_port() -> int | None:
    value = os.environ.get(PORT_VARIABLE)
    if not value:
        return None
    try:
        port = int(value)
    except ValueError:
        raise ServerError(f"{PORT_VARIABLE}={value!r} is not a port number",
                          hint=f"set {PORT_VARIABLE} to a port such as 4200, or unset it for a free one") from None
    if not 0 < port < 65536:
        raise ServerError(f"{PORT_VARIABLE}={port} is not a port number", hint="ports run from 1 to 65535")
    return port


@contextmanager
def _start_lock() -> Iterator[None]:
    lock = _lock()
    try:
        yield
    finally:
        _unlock(lock)


def _lock():
    """The start lock, held (an open file; closing it releases the lock)."""
    home = server_home()
    home.mkdir(parents=True, exist_ok=True)
    lock = open(home / "start.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def _unlock(lock) -> None:
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# The user's own server settings the managed server takes (`PREFECT_SERVER_EVENTS_RETENTION_PERIOD`,
# its services, ...), except those of its database, API address and UI, which are bflow's to set:
# a PREFECT_SERVER_DATABASE_CONNECTION_URL meant for a server of the user's would otherwise point
# bflow's server at that database.
OWN_SETTINGS = ("PREFECT_SERVER_DATABASE_", "PREFECT_SERVER_API_", "PREFECT_SERVER_UI_")


def server_environment(home: Path) -> dict[str, str]:
    """The environment of the server process: the user's, less Prefect's client settings and
    the server settings bflow owns (OWN_SETTINGS); the user's other PREFECT_SERVER_* settings
    win over bflow's defaults for them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        # Prefect's scheduler looks for deployments that need runs every 60 s by default;
        # short intervals need it to look more often, or they run dry between looks.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
        # ... and a deployment just (re)deployed gets its first runs within ~2 s, not 5.
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
    })
    env.update({k: v for k, v in os.environ.items() if k.startswith("PREFECT_SERVER_") and not k.startswith(OWN_SETTINGS)})
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_UI_ENABLED": "true",
        "PREFECT_UI_STATIC_DIRECTORY": str(home / "ui"),
    })
    return env


def prefect_command(*args: str) -> list[str]:
    """`prefect ARGS` of this environment's Prefect."""
    prefect = Path(sys.executable).with_name("prefect")
    found = [str(prefect)] if prefect.exists() else [sys.executable, "-m", "prefect"]
    return found + list(args)


def _spawn(say: Callable[[str], None], port: int | None, lock) -> Starting:
    home = server_home()
    if port is not None and _port_taken(port):
        raise ServerError(f"cannot start the Prefect server on port {port}: the port is in use",
                          hint=f"free it, or choose another with {PORT_VARIABLE} (or `bflow server start --port`)")
    port = port or _free_port()
    log = home / "server.log"
    cmd = prefect_command("server", "start", "--host", "127.0.0.1", "--port", str(port))
    seed(home / "prefect.db")  # a new home: from the prepared empty database, not ~10 s of migrations
    say(f"starting Prefect server on 127.0.0.1:{port} (state in {home}) ...")
    with open(log, "ab") as out:
        process = subprocess.Popen(cmd, env=server_environment(home), stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=out, start_new_session=True, cwd=home)
    base = f"http://127.0.0.1:{port}"
    info = ServerInfo(api_url=f"{base}/api", ui_url=base, pid=process.pid, port=port,
                      prefect_version=prefect_version())
    return Starting(info, process, lock)


class Starting:
    """The managed server: `info` at once, `ready()` once it answers. For a server this
    process started, `ready()` waits for it, records it (server.json) and releases the start
    lock; until then a process that exits stops the half-started server."""

    def __init__(self, info: ServerInfo, process: subprocess.Popen | None = None, lock=None):
        self.info = info
        self._process, self._lock = process, lock
        if process is not None:
            atexit.register(self._abandon)

    def ready(self) -> ServerInfo:
        """Raises ServerError when the server exits or does not answer within START_TIMEOUT."""
        if self._process is None:
            return self.info
        try:
            self._wait()
            _state_file().write_text(json.dumps(self.info.to_json()))
        except BaseException:  # also Ctrl-C while waiting: leave no half-started server behind
            self._stop()
            raise
        finally:
            self._done()
        return self.info

    def _wait(self) -> None:
        log = server_home() / "server.log"
        deadline = time.monotonic() + START_TIMEOUT
        while not healthy(self.info.api_url, timeout=1.0):
            if self._process.poll() is not None:
                raise ServerError(f"the Prefect server exited at start-up (status {self._process.returncode})",
                                  hint=f"its log: {log}")
            if time.monotonic() > deadline:
                raise ServerError(f"the Prefect server did not answer within {START_TIMEOUT:.0f} s",
                                  hint=f"its log: {log}", retryable=True)
            time.sleep(0.2)

    def _done(self) -> None:
        atexit.unregister(self._abandon)
        self._process = None
        _unlock(self._lock)

    def _abandon(self) -> None:
        """At exit before `ready()`: stop the server, which nothing recorded."""
        if self._process is not None:
            self._stop()
            self._done()

    def _stop(self) -> None:
        """Stop the server this process started, unless it has exited and been reaped (its pid
        may be another process's by then)."""
        if self._process.poll() is None:
            _terminate(self.info, child=True)


def _terminate(info: ServerInfo, timeout: float = 20.0, child: bool = False) -> None:
    """Stop the server process group of `info` (if it is still a Prefect server) and forget it.
    `child`: a server this process started and has not reaped, so its pid is not another's;
    it is stopped without a look at its command line, which reads empty until its exec has
    ended (Popen returns a little before: a command that exited at once left it running)."""
    recorded = _read_state()
    if recorded is not None and recorded.pid == info.pid:
        _state_file().unlink(missing_ok=True)
    if not _pid_alive(info.pid) or not (child or _is_prefect_server(info.pid)):
        return
    try:
        os.killpg(info.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _pid_alive(info.pid) and not _is_zombie(info.pid):
        if time.monotonic() > deadline:
            try:
                os.killpg(info.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        time.sleep(0.1)
    _reap(info.pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _reap(pid: int) -> None:
    """Collect the exit status of `pid` if it is our child (a server this process started)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
