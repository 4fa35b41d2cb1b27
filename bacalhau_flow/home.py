"""Where state lives: everything under $BFLOW_HOME (default ~/.bflow).

Prefect's local database lives there too, unless PREFECT_API_URL points at a server.
`configure_prefect()` must run before prefect is imported.
"""

from __future__ import annotations

import os
from pathlib import Path


def bflow_home() -> Path:
    return Path(os.environ.get("BFLOW_HOME") or Path.home() / ".bflow").expanduser()


def jobs_db() -> Path:
    return bflow_home() / "jobs.sqlite"


def store_root() -> Path:
    return bflow_home() / "store"


def nodes_root() -> Path:
    return bflow_home() / "nodes"


def configure_prefect(quiet: bool = True) -> None:
    """Point Prefect at $BFLOW_HOME/prefect unless the user chose a Prefect server."""
    home = bflow_home()
    if not os.environ.get("PREFECT_API_URL"):
        prefect_home = home / "prefect"
        prefect_home.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("PREFECT_HOME", str(prefect_home))
        os.environ.setdefault(
            "PREFECT_API_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}"
        )
        os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
        # Prefect's default of 20 s is too short on a busy 2-core machine (start-up ~9 s idle).
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if quiet:
        # bflow shows its own progress and summary; Prefect's records still go to its API.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")
    # No usage reporting: nothing outside this machine is reachable, and the telemetry
    # write races the first flow run for Prefect's SQLite database ("database is locked").
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
