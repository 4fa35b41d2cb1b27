"""PREFECT_API_URL must answer: a busy server (it takes connections, answers slowly) is waited
for, a port where nothing listens fails at once with one line."""

import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bacalhau_flow.flow import prefect_api


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlowHealth(BaseHTTPRequestHandler):
    delays = [1.5]  # the first answer comes after this long, the next at once

    def do_GET(self):
        if self.delays:
            time.sleep(self.delays.pop(0))
        try:
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"true")
        except OSError:
            pass  # the client gave up on this one (its timeout) and asks again

    def log_message(self, *args):
        pass


def test_a_busy_server_is_waited_for(monkeypatch):
    monkeypatch.setattr(prefect_api, "API_CHECK_TIMEOUT", 0.5)
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api"
        assert prefect_api.answers(url)
    finally:
        server.shutdown()


def test_nothing_listening_fails_at_once():
    started = time.monotonic()
    assert not prefect_api.answers(f"http://127.0.0.1:{_free_port()}/api")
    assert time.monotonic() - started < 3


def test_a_run_against_nothing_is_one_line_and_exit_status(tmp_path):
    spec = tmp_path / "p.yaml"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("x")
    spec.write_text("pipeline: p\ninput: {url: d, glob: '/*'}\ntransform: {cmd: ['true']}\n")
    env = dict(os.environ, PREFECT_API_URL=f"http://127.0.0.1:{_free_port()}/api", BFLOW_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-m", "bacalhau_flow.cli", "run", str(spec)], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert "no Prefect server answers at PREFECT_API_URL=" in out.stderr
