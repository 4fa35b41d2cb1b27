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


def _python(home, script: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["BFLOW_HOME"] = str(home)
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
        "print(json.dumps({'url': url, 'env': os.environ['PREFECT_API_URL'], 'early': early,\n"
        "                  'ready': healthy(url), 'recorded': record['api_url']}))\n"
        "stop_server()\n"
    )
    done = _python(tmp_path, script)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["url"] == seen["env"] == seen["recorded"]
    assert seen["early"] is False and seen["ready"] is True
