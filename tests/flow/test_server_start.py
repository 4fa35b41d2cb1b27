"""Starting the managed Prefect server without waiting for it (flow/server.py `start_server`,
flow/prefect_api.py `use_prefect(wait=False)`): the url is known at once, so a command imports
Prefect while the server starts; a command that exits before it answers leaves none behind.
Each runs in a subprocess with a $BFLOW_HOME of its own (a server start costs ~10 s here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def _python(home, script: str, **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(settings, BFLOW_HOME=str(home))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240,
                          check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"


def test_a_command_that_exits_before_its_server_answers_stops_it(tmp_path):
    done = _python(tmp_path, "from bacalhau_flow.flow.server import start_server\n"
                             "print(start_server().info.pid)\n")
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout)
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid)
    assert not (tmp_path / "prefect-server" / "server.json").exists()


def test_the_url_is_set_at_once_and_prefect_ready_waits_for_the_server(tmp_path):
    script = (
        "import json, os\n"
        "from bacalhau_flow.flow.prefect_api import prefect_ready, use_prefect\n"
        "from bacalhau_flow.flow.server import healthy, server_home, stop_server\n"
        "url = use_prefect(wait=False)\n"
        "early = healthy(url, timeout=0.5)\n"
        "import prefect  # while the server starts\n"
        "prefect_ready()\n"
        "record = json.loads((server_home() / 'server.json').read_text())\n"
        "import urllib.request\n"
        "settings = json.load(urllib.request.urlopen(url + '/admin/settings', timeout=30))['server']\n"
        "print(json.dumps({'url': url, 'env': os.environ['PREFECT_API_URL'], 'early': early,\n"
        "                  'ready': healthy(url), 'recorded': record['api_url'],\n"
        "                  'retention': settings['events']['retention_period'],\n"
        "                  'scheduler': settings['services']['scheduler']['loop_seconds']}))\n"
        "stop_server()\n"
    )
    # the user's own server settings reach the managed server, but not one of its database
    done = _python(tmp_path, script, PREFECT_SERVER_EVENTS_RETENTION_PERIOD="P2D",
                   PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path}/elsewhere.db")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["url"] == seen["env"] == seen["recorded"]
    assert seen["early"] is False and seen["ready"] is True
    assert seen["retention"] == "P2D" and seen["scheduler"] == 5.0  # bflow's default beside the user's
    assert not (tmp_path / "elsewhere.db").exists() and (tmp_path / "prefect-server" / "prefect.db").exists()


def test_the_server_takes_the_users_server_settings_but_not_its_database_address_or_ui(tmp_path, monkeypatch):
    from bacalhau_flow.flow.server import server_environment

    for name, value in {"PREFECT_SERVER_EVENTS_RETENTION_PERIOD": "P1D",
                        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "30",
                        "PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://elsewhere/prefect",
                        "PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://elsewhere/prefect",
                        "PREFECT_SERVER_API_BASE_PATH": "/elsewhere", "PREFECT_SERVER_UI_ENABLED": "false",
                        "PREFECT_API_URL": "http://elsewhere/api", "PREFECT_HOME": "/elsewhere"}.items():
        monkeypatch.setenv(name, value)
    env = server_environment(tmp_path)
    assert env["PREFECT_SERVER_EVENTS_RETENTION_PERIOD"] == "P1D"
    assert env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] == "30"  # the user's over bflow's default
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"
    assert env["PREFECT_HOME"] == str(tmp_path) and env["PREFECT_SERVER_UI_ENABLED"] == "true"
    for gone in ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_SERVER_API_BASE_PATH", "PREFECT_API_URL"):
        assert gone not in env


def test_a_server_it_started_is_stopped_at_exit_before_its_command_line_can_be_read(tmp_path, monkeypatch):
    # Popen returns a little before the child's exec has ended, while its command line still
    # reads empty: a command that exited at once took its server for some other process and
    # left it running. A child of ours (not reaped: its pid is not another's) is stopped
    # whatever its command line says; here `sleep`, which no look at it takes for a server.
    import subprocess

    from bacalhau_flow.flow import server

    monkeypatch.setenv("BFLOW_HOME", str(tmp_path))
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        info = server.ServerInfo(api_url="http://127.0.0.1:9/api", ui_url="http://127.0.0.1:9", pid=child.pid,
                                 port=9, prefect_version="0")
        starting = server.Starting(info, child, server._lock())
        starting._abandon()  # what the process's exit runs: it stops the server and reaps it
        assert not _alive(child.pid)
    finally:
        child.kill()
