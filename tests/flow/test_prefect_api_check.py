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


def _api_settings_of_a_new_process(**env) -> list[str]:
    """PREFECT_API_URL and PREFECT_API_SSL_CERT_FILE as a new process that calls use_prefect sees them."""
    code = ("import os; from bacalhau_flow.flow.prefect_api import use_prefect; use_prefect(); "
            "print(os.environ.get('PREFECT_API_URL')); print(os.environ.get('PREFECT_API_SSL_CERT_FILE'))")
    base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_SSL_CERT_FILE")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return out.splitlines()


def test_clients_of_the_managed_server_load_one_certificate_not_certifis():
    import ssl

    url, cert_file = _api_settings_of_a_new_process()
    assert url.startswith("http://127.0.0.1:") and cert_file == str(prefect_api.NO_TLS_CA)
    context = ssl.create_default_context(cafile=cert_file)  # a file Prefect's clients can load
    assert context.cert_store_stats()["x509_ca"] == 1


def test_a_certificate_file_of_the_users_own_or_their_own_api_is_left_alone(tmp_path):
    own = tmp_path / "own.pem"
    own.write_text(prefect_api.NO_TLS_CA.read_text())
    assert _api_settings_of_a_new_process(PREFECT_API_SSL_CERT_FILE=str(own))[1] == str(own)
    managed = _api_settings_of_a_new_process()[0]
    assert _api_settings_of_a_new_process(PREFECT_API_URL=managed) == [managed, "None"]
