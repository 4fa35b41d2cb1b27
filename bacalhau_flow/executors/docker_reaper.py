"""The containers of a node end with its process, however it ends (a SIGKILL too).

Every container the docker executor makes carries the label `bflow.owner=<token>`, a token of
this process's own. With its first container, the process starts a small reaper (REAPER,
`python -I -S`, one per process, executors/after_exit.py). When this process ends, the reaper
asks the engine to remove every container with the label (force: running ones are killed
first). Without it, the containers of a killed `bflow node` or
`bflow run` ran on to their end and stayed, with nobody left to take their results.

Over the engine's unix socket only: with `DOCKER_HOST` over TCP or SSH the containers of a
killed node still run on (the label says whose they were: `docker ps --filter label=bflow.owner`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid

from .after_exit import run_after_exit

OWNER_LABEL = "bflow.owner"

# argv: the engine's unix socket, the owner token. Waits for end of file on stdin, then removes.
REAPER = r"""
import http.client, json, socket, sys, urllib.parse
path, owner = sys.argv[1], sys.argv[2]
sys.stdin.buffer.read()
class Engine(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(path)
def call(method, url):
    engine = Engine("docker")
    try:
        engine.request(method, url)
        answer = engine.getresponse()
        return answer.status, answer.read()
    finally:
        engine.close()
mine = urllib.parse.quote(json.dumps({"label": ["bflow.owner=" + owner]}))
status, body = call("GET", "/containers/json?all=1&filters=" + mine)
if status == 200:
    for container in json.loads(body):
        call("DELETE", "/containers/" + container["Id"] + "?force=1&v=1")
"""

_lock = threading.Lock()
_owner: tuple[int, str, subprocess.Popen | None] | None = None  # (pid, token, its reaper)


def owner_labels(socket_path: str | None) -> dict[str, str]:
    """The label that names this process as the owner of a container; starts this process's
    reaper on the first call (`socket_path`: the engine's unix socket, None over TCP or SSH)."""
    global _owner
    with _lock:
        if _owner is None or _owner[0] != os.getpid():  # a forked child owns its own containers
            token = uuid.uuid4().hex
            reaper = None
            if socket_path:
                reaper = run_after_exit([sys.executable, "-I", "-S", "-c", REAPER, socket_path, token])
            _owner = (os.getpid(), token, reaper)
        return {OWNER_LABEL: _owner[1]}

