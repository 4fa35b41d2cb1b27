"""An empty Prefect database, migrated once per Prefect version, that new managed servers start from.

A managed server on a new $BFLOW_HOME spent ~10 s of its ~15 s first start in Prefect's own
database migrations (alembic, on an empty SQLite file; 2 cores). `prepare()` runs them once,
with `prefect server database upgrade`, into `template_path()` (under the user's cache folder,
one file per Prefect version); `bflow server prepare` calls it, and scripts/setup.sh does.
A server whose state folder has no database yet starts with a copy (`seed`), where Prefect's
own migration check then finds nothing to do. Without a template a server migrates as before.

Nothing here imports Prefect: the migration runs in a child process.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from importlib.metadata import version as package_version
from pathlib import Path

from ..errors import BflowError

MIGRATE_TIMEOUT = 600.0  # seconds; ~15 s on 2 cores


def template_path() -> Path:
    """Where the empty database of this Prefect version is kept: `$XDG_CACHE_HOME/bacalhau-flow`,
    or `~/.cache/bacalhau-flow`."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bacalhau-flow" / f"prefect-{package_version('prefect')}-empty.db"


def seed(database: Path) -> bool:
    """Start `database` as a copy of the template when it does not exist yet and a template
    does; True when it did. Never raises: without a copy, the server migrates its own."""
    try:
        template = template_path()
        if database.exists() or not template.is_file():
            return False
        partial = database.with_name(database.name + ".seeding")
        shutil.copyfile(template, partial)
        os.replace(partial, database)  # whole or not at all: a server never opens half a copy
        return True
    except (OSError, RuntimeError):  # RuntimeError: no home folder to find the cache in
        return False


def prepare() -> Path:
    """Make the template unless it exists; its path. Raises BflowError when the migration fails
    or the cache folder cannot be written."""
    template = template_path()
    if template.is_file():
        return template
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".preparing-", dir=template.parent))
    except OSError as e:
        raise BflowError(f"cannot write the prepared Prefect database to {template.parent}: {e.strerror or e}",
                         hint="set XDG_CACHE_HOME to a folder this user can write") from None
    try:
        os.replace(_migrate(work), template)  # two prepares at once: the last one's, whole
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return template


def _migrate(home: Path) -> Path:
    """Run Prefect's migrations on a new database in `home`, as a managed server's there would
    have it (flow/server.py), check that they ended, and return the database's path."""
    from .server import prefect_command, server_environment  # server.py imports this module

    database = home / "prefect.db"
    try:
        done = subprocess.run(prefect_command("server", "database", "upgrade", "-y"), env=server_environment(home),
                              cwd=home, stdin=subprocess.DEVNULL, capture_output=True, timeout=MIGRATE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BflowError(f"Prefect's database migrations did not end within {MIGRATE_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise BflowError(f"Prefect's database migrations failed (exit {done.returncode}): "
                         f"{said[-1] if said else 'no output'}",
                         hint="new servers migrate their own database meanwhile; `bflow server prepare` tries again")
    db = sqlite3.connect(database)
    try:
        versions = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error as e:
        versions, why = [], str(e)
    else:
        why = "no version recorded"
    finally:
        db.close()  # the last connection: its end folds the WAL into the file
    if not versions:
        raise BflowError(f"Prefect's database migrations left {database} unfinished: {why}")
    return database
