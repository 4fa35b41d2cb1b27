"""A real local HTTP file server for tests, that can fail on purpose and counts what it serves."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections import Counter
from pathlib import Path


class FileServer:
    """Serves `root` on 127.0.0.1 (a free port). The first `failures` requests of each
    (method, path) get `status` (503 by default); the others are served, each after `delay`
    seconds. `requests` counts requests per (method, path); `max_in_flight` is the most
    requests that were being answered at the same time."""

    def __init__(self, root: Path, failures: int = 0, status: int = 503, delay: float = 0.0,
                 missing: tuple[str, ...] = ()):
        self.root = Path(root)
        self.failures, self.status, self.delay, self.missing = failures, status, delay, set(missing)
        self.requests: Counter[tuple[str, str]] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._url = ""

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT (still known after stop())."""
        assert self._url, "start() first"
        return self._url

    def start(self) -> FileServer:
        handler = functools.partial(_handler(self), directory=str(self.root))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def gets(self, path: str) -> int:
        """How many GET requests `path` got."""
        return self.requests[("GET", path)]

    # called by the handler
    def _begin(self, method: str, path: str) -> int | None:
        """The status to fail this request with, or None to serve it."""
        with self._lock:
            self.requests[(method, path)] += 1
            if self.requests[(method, path)] <= self.failures:
                return self.status
            if method == "GET" and path in self.missing:
                return 404
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.delay:
            time.sleep(self.delay)
        return None

    def _end(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _handler(server: FileServer):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _serve(self, method: str, serve) -> None:
            status = server._begin(method, self.path)
            if status is not None:
                self.send_error(status)
                return
            try:
                serve()
            finally:
                server._end()

        def do_GET(self):
            self._serve("GET", super().do_GET)

        def do_HEAD(self):
            self._serve("HEAD", super().do_HEAD)

    return Handler
