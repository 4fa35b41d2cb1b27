"""Where state lives: everything under $BFLOW_HOME (default ~/.bflow).

The managed Prefect server keeps its database there too (`prefect-server/`, flow/server.py),
unless PREFECT_API_URL points at a Prefect server of the user's.
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
