"""Which Prefect API this process talks to, chosen before Prefect is imported.

`PREFECT_API_URL` wins when it is set (it must answer). Otherwise every `bflow` command of one
$BFLOW_HOME shares the managed local server (flow/server.py), started on first need. Used from
a user's own Prefect flow (Prefect already imported), bflow keeps the API that process uses.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from .server import ServerError, Starting, healthy, server_home, start_server

API_CHECK_TIMEOUT = 5.0  # seconds for PREFECT_API_URL to answer one health check
# ...and how long to keep asking a server that takes connections but answers slowly: busy (a
# run's events before this one), not gone. One where nothing listens fails at once.
API_BUSY_WAIT = 30.0
TAG = "bflow"  # on every flow run and deployment bflow makes: how serve and the tests find them
NO_TLS_CA = Path(__file__).with_name("no_tls_ca.pem")  # see use_prefect


_lock = threading.Lock()  # pipelines of one file may start in threads at once
_starting: Starting | None = None  # the managed server this process started, until it answers


def use_prefect(echo: Callable[[str], None] | None = None, wait: bool = True) -> str | None:
    """Point this process at a Prefect API and return its url (None when Prefect was imported
    before, so the user's own choice stands). `echo` gets a line when a server is started or
    replaced. Without `wait`, a managed server that has to start is not waited for: the url is
    set at once (so Prefect can be imported meanwhile) and `prefect_ready()` waits for it.
    Raises ServerError when PREFECT_API_URL does not answer or no server can start."""
    global _starting
    prefect_settings()
    with _lock:
        if _starting is not None:  # started by this process, not answering yet
            url = _starting.info.api_url
        elif "prefect" in sys.modules and not os.environ.get("PREFECT_API_URL"):
            return None  # inside a user's own flow: its process already chose an API
        elif url := os.environ.get("PREFECT_API_URL"):
            if not answers(url):
                raise ServerError(f"no Prefect server answers at PREFECT_API_URL={url}",
                                  hint="start that server, or unset PREFECT_API_URL to use bflow's own "
                                       "(`bflow server start`)", retryable=True)
            return url
        else:
            _starting = start_server(echo=echo or _to_stderr)
            url = os.environ["PREFECT_API_URL"] = _starting.info.api_url
            os.environ.setdefault("PREFECT_HOME", str(server_home() / "client"))  # the client's files under $BFLOW_HOME
            if url.startswith("http://"):
                # Prefect builds a verifying TLS context for each API client it makes, plain HTTP
                # or not: certifi's ~150 CA certificates, 31-48 ms each time, four times a job
                # (its flow's client, the runner's, two for the result store). The managed server
                # speaks plain HTTP on 127.0.0.1, so no certificate is ever checked: a one-certificate
                # file (a CA whose key was thrown away) loads in ~3 ms.
                os.environ.setdefault("PREFECT_API_SSL_CERT_FILE", str(NO_TLS_CA))
    if wait:
        prefect_ready()
    return url


def answers(url: str) -> bool:
    """Whether the Prefect API at `url` answers, waiting up to API_BUSY_WAIT while something
    listens there."""
    deadline = time.monotonic() + API_BUSY_WAIT
    while not healthy(url, timeout=API_CHECK_TIMEOUT):
        if time.monotonic() > deadline or not _listening(url):
            return False
        time.sleep(0.2)
    return True


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                      timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def prefect_ready() -> None:
    """Wait until the managed server that `use_prefect(wait=False)` started answers (nothing
    to do when none is starting). Raises ServerError when it cannot start."""
    global _starting
    with _lock:
        starting, _starting = _starting, None
        if starting is not None:
            starting.ready()


def prefect_settings() -> None:
    """bflow's defaults for Prefect settings; each one the user set stays as it is."""
    # Prefect's own lines stay off the terminal (bflow shows progress and a summary); its
    # records, task-run logs included, still go to the API at Prefect's logging level.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # nothing outside is reachable
    os.environ.setdefault("DO_NOT_TRACK", "1")  # no telemetry notice printed into the display


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = ["TAG", "ServerError", "use_prefect", "prefect_ready", "prefect_settings"]
