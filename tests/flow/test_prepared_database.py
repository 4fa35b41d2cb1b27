"""The prepared empty Prefect database (flow/prefect_db.py): a new $BFLOW_HOME's server starts
from a copy of it, a home's own database is never replaced, and a failure to prepare one is one
line. The template of this Prefect version is made once (scripts/setup.sh has made it in CI)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import urllib.request
from pathlib import Path

from home_helpers import bflow_in

from bacalhau_flow.flow import prefect_db

MARKER = "bflow-seed-marker"


def marked_template(cache: Path, monkeypatch) -> Path:
    """The real template of this Prefect version, copied under `cache` with one flow more."""
    real = prefect_db.prepare()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    template = prefect_db.template_path()
    template.parent.mkdir(parents=True)
    shutil.copyfile(real, template)
    db = sqlite3.connect(template)
    db.execute("INSERT INTO flow (name) VALUES (?)", (MARKER,))
    db.commit()
    db.close()
    return template


def test_a_new_homes_server_starts_from_the_prepared_database(tmp_path, monkeypatch):
    cache, home = tmp_path / "cache", tmp_path / "home"
    marked_template(cache, monkeypatch)
    started = bflow_in(home, "server", "start", "--json")
    assert started.returncode == 0, started.stderr
    try:
        api = json.loads(started.stdout)["api_url"]
        with urllib.request.urlopen(f"{api}/flows/name/{MARKER}", timeout=10) as answer:
            assert json.load(answer)["name"] == MARKER  # only the copy has it
    finally:
        assert bflow_in(home, "server", "stop").returncode == 0


def test_a_homes_own_database_is_never_replaced(tmp_path, monkeypatch):
    marked_template(tmp_path / "cache", monkeypatch)
    own = tmp_path / "prefect.db"
    own.write_bytes(b"the history of this home")
    assert prefect_db.seed(own) is False
    assert own.read_bytes() == b"the history of this home"
    fresh = tmp_path / "new" / "prefect.db"
    fresh.parent.mkdir()
    assert prefect_db.seed(fresh) is True and fresh.read_bytes() == prefect_db.template_path().read_bytes()


def test_without_a_template_a_new_home_is_left_to_migrate_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    assert prefect_db.seed(tmp_path / "prefect.db") is False
    assert not (tmp_path / "prefect.db").exists()


def test_a_cache_that_cannot_be_written_is_one_line_with_a_hint(tmp_path, monkeypatch):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    done = bflow_in(tmp_path / "home", "server", "prepare")
    assert done.returncode == 1
    assert f"cannot write the prepared Prefect database to {blocked / 'bacalhau-flow'}" in done.stderr
    assert "hint: set XDG_CACHE_HOME" in done.stderr and "Traceback" not in done.stderr
