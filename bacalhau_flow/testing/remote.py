"""Compute nodes on "other machines" for tests: `bflow node` processes that cannot see this one's files.

A remote machine shares nothing with the requester but the network. To get that on one
host, each node here runs in its own mount namespace (`unshare --mount --propagation
private`) in which an empty tmpfs is mounted over every folder the requester keeps its
files in: the test's work folder (its specs and data) and the requester's $BFLOW_HOME (its
job store and content store). Each node has its own $BFLOW_HOME outside those folders, and
all of them meet the requester on one real nats-server on 127.0.0.1. A test that passes
against these nodes therefore cannot be passing because a node quietly read the requester's
disk: a local path, a CID in the requester's store or a `pipeline://` output has to travel
over the network, as it would between machines.

    with RemoteNodes(hide=[work_folder], count=3) as nodes:   # requester's $BFLOW_HOME hidden too
        r = nodes.bflow("run", spec, "--network", nodes.url, "--json")   # the requester
        assert r.json()["state"] == "completed"

Where mount namespaces are not allowed (not root, or a sandbox that forbids `unshare`),
`require_remote_machines()` skips the test, and fails it in CI (requires.py).
`assert_isolated(nodes, path)` is the self-check that a node really cannot see a file.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .requires import import_or_skip, require_or_skip

UNSHARE = ("unshare", "--mount", "--propagation", "private")
UNSHARE_HINT = "run as root (mounting a tmpfs in a private mount namespace needs CAP_SYS_ADMIN)"

# The wrapper each node runs under `unshare`: hide the folders given before `--` behind empty
# tmpfs mounts (visible only inside this namespace), then become the command after `--`, so
# the node's pid is the one the fixture started and signals.
_WRAPPER = """#!/bin/sh
set -eu
while [ "$1" != "--" ]; do
    mount -t tmpfs -o size=1m tmpfs "$1"
    shift
done
shift
exec "$@"
"""

# What a node must not inherit from the test process: the requester's home and settings
# (a remote machine has its own), and any IPFS gateway (ipfs:// must not be read through one).
_NOT_INHERITED_PREFIXES = ("BFLOW_", "PREFECT_")
_NOT_INHERITED = ("IPFS_GATEWAY",)

_running: set["RemoteNodes"] = set()  # stopped at exit, so an interrupted run leaves no node behind


def _bflow_command() -> list[str]:
    return [sys.executable, "-m", "bacalhau_flow.cli"]


def mount_namespaces_allowed() -> bool:
    """Whether this process may start a private mount namespace and mount a tmpfs in it
    (what every remote node needs). Tried for real: capabilities alone do not tell, since
    containers and seccomp profiles forbid it for root too."""
    if shutil.which("unshare") is None:
        return False
    probe = tempfile.mkdtemp(prefix="bflow-unshare-probe-")
    try:
        done = subprocess.run([*UNSHARE, "sh", "-c", 'mount -t tmpfs tmpfs "$1"', "sh", probe],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        os.rmdir(probe)


def require_remote_machines() -> None:
    """Skip the test (fail it in CI) unless remote nodes can be started here: mount
    namespaces allowed and the NATS plugin with its nats-server installed."""
    require_or_skip(mount_namespaces_allowed(), "`unshare --mount` with a tmpfs mount", UNSHARE_HINT)
    import_or_skip("bacalhau_flow_nats.server", "the NATS plugin (plugins/bacalhau-flow-nats)",
                   "bash scripts/setup.sh installs it")


@dataclass
class Outcome:
    """What a `bflow` command run as the requester left: exit code, stdout, stderr."""

    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


class RemoteNodes:
    """`count` `bflow node` processes, each in its own mount namespace where the folders in
    `hide` and the requester's $BFLOW_HOME are empty, on one nats-server (started here unless
    `nats` is given). `env` is added to each node's environment: what a remote machine would
    be configured with, such as AWS credentials. `requester_home` is the requester's
    $BFLOW_HOME (default: this process's), which `bflow()` runs commands with."""

    def __init__(self, hide: Iterable[str | Path], count: int = 3, *, requester_home: str | Path | None = None,
                 env: Mapping[str, str] | None = None, node_args: Sequence[str] = ("--cpu", "1"),
                 nats=None, root: str | Path | None = None):
        from ..home import bflow_home

        self.count = count
        self.requester_home = Path(requester_home or bflow_home()).resolve()
        self.hidden = _outermost([Path(p).resolve() for p in (*hide, self.requester_home)])
        self.env = dict(env or {})
        self.node_args = list(node_args)
        self.root = Path(root or tempfile.mkdtemp(prefix="bflow-remote-")).resolve()
        for folder in self.hidden:
            if self.root == folder or folder in self.root.parents:
                raise ValueError(f"the nodes' folder {self.root} is inside the hidden folder {folder}")
        self.wrapper = self.root / "hide-and-exec.sh"
        self._nats, self._own_nats = nats, nats is None
        self.processes: list[subprocess.Popen] = []
        self.names: list[str] = []
        self.ids: list[str] = []

    # -- addresses -----------------------------------------------------------------
    @property
    def url(self) -> str:
        """The network URL, nats://127.0.0.1:PORT, for `--network`."""
        if self._nats is None:
            raise RuntimeError("start() the remote nodes first")
        return self._nats.url

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def home(self, index: int) -> Path:
        """Node `index`'s own $BFLOW_HOME (outside every hidden folder)."""
        return self.root / self.names[index] / "home"

    def log(self, index: int) -> str:
        """Node `index`'s stderr so far, for failure messages."""
        try:
            return (self.root / self.names[index] / "stderr").read_text(errors="replace")
        except OSError:
            return ""

    # -- lifecycle -----------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> "RemoteNodes":
        """Start the nats-server (unless given), then every node at once; return when each
        node has printed its id and `bflow nodes` lists them all."""
        require_remote_machines()
        _running.add(self)
        try:
            if self._nats is None:
                from bacalhau_flow_nats.server import NatsServer

                self._nats = NatsServer(workdir=self.root / "nats").start()
            self.wrapper.write_text(_WRAPPER)
            for i in range(self.count):
                self._start_node(f"node{i + 1}")
            deadline = time.monotonic() + timeout
            self.ids = [self._wait_for_id(i, deadline) for i in range(self.count)]
            self._wait_until_listed(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL to its whole process group, so no shard it
        started outlives it), then the nats-server if it was started here. Idempotent."""
        processes, self.processes = self.processes, []
        for proc in processes:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in processes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # whatever is left of its group, the node included
            proc.wait()
        if self._own_nats and self._nats is not None:
            self._nats.stop()
        _running.discard(self)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "RemoteNodes":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- running things --------------------------------------------------------------
    def hidden_command(self, *argv: str | Path) -> list[str]:
        """`argv` wrapped so that it runs as a node does: in a fresh mount namespace with
        the requester's folders hidden."""
        return [*UNSHARE, "sh", str(self.wrapper), *map(str, self.hidden), "--", *map(str, argv)]

    def run_hidden(self, *argv: str | Path, timeout: float = 30) -> Outcome:
        """Run `argv` where a node would see the files (the self-check of the hiding)."""
        done = subprocess.run(self.hidden_command(*argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=self.node_env(self.root), cwd=self.root)
        return Outcome(done.returncode, done.stdout, done.stderr)

    def requester_env(self) -> dict[str, str]:
        """The requester's environment: this process's (PREFECT_API_URL included, so it uses
        the session's Prefect server), its $BFLOW_HOME, and no IPFS gateway."""
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env["BFLOW_HOME"] = str(self.requester_home)
        return env

    def bflow(self, *args: str | Path, timeout: float = 240, cwd: str | Path | None = None) -> Outcome:
        """Run `bflow ARGS` as the requester, in a subprocess (`run`, `add`, `get`, `describe`...)."""
        done = subprocess.run([*_bflow_command(), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, env=self.requester_env(), cwd=cwd)
        return Outcome(done.returncode, done.stdout, done.stderr)

    def listed(self, wait: float = 1.0) -> list[dict]:
        """The nodes `bflow nodes --network URL --json` finds (as the requester)."""
        r = self.bflow("nodes", "--network", self.url, "--json", "--wait", str(wait), timeout=60)
        if r.code != 0:
            raise RuntimeError(f"bflow nodes failed (exit {r.code}): {r.stderr.strip()}")
        return r.json()

    def node_env(self, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in _NOT_INHERITED and not k.startswith(_NOT_INHERITED_PREFIXES)}
        env.update(self.env)
        env["BFLOW_HOME"] = str(home)
        return env

    # -- internals ---------------------------------------------------------------------
    def _start_node(self, name: str) -> None:
        folder = self.root / name
        home = folder / "home"
        home.mkdir(parents=True)
        # as an operator would: the node trusts the requester's key (`bflow id` on its machine)
        from ..network.identity import Identity

        requester = Identity.load_or_create(self.requester_home / "client.key").node_id
        (home / "trusted").write_text(f"# the requester these tests run\n{requester}\n")
        self.names.append(name)
        argv = [*_bflow_command(), "node", "--network", self.url, "--name", name, *self.node_args]
        with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
            # its own session: the node leads a process group that stop() can signal as a whole
            self.processes.append(subprocess.Popen(self.hidden_command(*argv), stdin=subprocess.DEVNULL, stdout=out,
                                                   stderr=err, env=self.node_env(home), cwd=home,
                                                   start_new_session=True))

    def _wait_for_id(self, index: int, deadline: float) -> str:
        """The node id that `bflow node` prints on stdout once it has joined the network."""
        stdout = self.root / self.names[index] / "stdout"
        while True:
            line = stdout.read_text().strip()
            if line.startswith("n-"):
                return line.splitlines()[0]
            proc = self.processes[index]
            if proc.poll() is not None:
                raise RuntimeError(f"remote node {self.names[index]} exited with status {proc.returncode}:\n"
                                   f"{self.log(index)[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"remote node {self.names[index]} printed no id in time:\n{self.log(index)[-3000:]}")
            time.sleep(0.1)

    def _wait_until_listed(self, deadline: float) -> None:
        """Jobs are only run once the requester's side sees every node, as a user would check."""
        seen: set[str] = set()
        while True:
            seen = {n["id"] for n in self.listed()}
            if set(self.ids) <= seen:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"bflow nodes lists {sorted(seen)}, not every node of {self.ids}")


def assert_isolated(nodes: RemoteNodes, secret: Path) -> None:
    """The self-check: `secret`, a file in a hidden folder, is readable here but not by any
    node process. Checked three ways: each node is in a mount namespace other than this
    process's; the file is absent seen through that node's own root (/proc/PID/root, which
    resolves paths with the node's mounts); and a command run under the same wrapper finds
    the hidden folder holding it empty and cannot read it."""
    secret = Path(secret).resolve()
    assert secret.is_file(), f"{secret} should exist on the requester's side"
    hidden_in = [folder for folder in nodes.hidden if secret.is_relative_to(folder)]
    assert hidden_in, f"{secret} is in no hidden folder"
    mine = os.readlink("/proc/self/ns/mnt")
    for name, pid in zip(nodes.names, nodes.pids):
        assert os.readlink(f"/proc/{pid}/ns/mnt") != mine, f"{name} shares this process's mount namespace"
        assert not os.path.exists(f"/proc/{pid}/root{secret}"), f"{name} can see {secret}"
    listing = nodes.run_hidden("ls", "-A", hidden_in[0])
    assert listing.code == 0 and listing.stdout == "", (listing.code, listing.stdout, listing.stderr)
    cat = nodes.run_hidden("cat", secret)
    assert cat.code != 0 and "No such file" in cat.stderr, (cat.code, cat.stdout, cat.stderr)


def _outermost(paths: list[Path]) -> list[Path]:
    """The paths without those inside another one: mounting over the outer folder already
    hides the inner, whose mount point would then no longer exist."""
    kept: list[Path] = []
    for p in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(p == k or k in p.parents for k in kept):
            kept.append(p)
    return kept


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the node leads its own group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _stop_leftovers() -> None:
    for nodes in list(_running):
        nodes.stop(timeout=2)
