"""A devstack over several processes (`bflow devstack --nodes N --processes P`).

One Python process runs one event loop: thousands of nodes in it share that loop's CPU, and
a loop busy with one node's messages delays every other's heartbeats. So N nodes are spread
over P worker processes, each a `Devstack(shared=True)` (one connection and one gateway for
its nodes) on the same nats-server. The parent starts the workers, waits until each says
how many nodes it started, and stops them all (SIGTERM) when it stops; a worker that dies
is reported, never waited for.

A worker is `python -m bacalhau_flow.network.devstack_processes` with its settings as JSON
on its command line; it prints one line, `ready N`, once its nodes are on the network.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import BflowError

READY_TIMEOUT_S = 600.0


def split(nodes: int, processes: int) -> list[int]:
    """How many nodes each process runs: as even as can be, none empty."""
    processes = max(1, min(processes, nodes))
    return [nodes // processes + (1 if i < nodes % processes else 0) for i in range(processes)]


class DevstackProcesses:
    """Worker processes running `nodes` nodes on `url` between them."""

    def __init__(self, url: str, nodes: int, processes: int, root: Path, *, labels: dict[str, str] | None = None,
                 trust: list[str] | None = None, advertise: str | None = None):
        self.url = url
        self.counts = split(nodes, processes)
        self.root = Path(root)
        from .embedded import embedded_node_capacity

        # each node an equal part of the machine's memory and disk, across all the processes
        self.settings = {"labels": labels or {}, "trust": trust or [], "advertise": advertise,
                         "capacity": embedded_node_capacity(nodes).model_dump()}
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "DevstackProcesses":
        try:
            for i, count in enumerate(self.counts):
                settings = dict(self.settings, url=self.url, nodes=count, root=str(self.root / f"process-{i}"))
                self.procs.append(subprocess.Popen([sys.executable, "-m", __name__, json.dumps(settings)],
                                                   stdout=subprocess.PIPE, text=True, start_new_session=True))
            for proc, count in zip(self.procs, self.counts):
                self._wait_ready(proc, count)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self, proc: subprocess.Popen, count: int) -> None:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(READY_TIMEOUT_S)
        if not line or line[0].strip() != f"ready {count}":
            raise BflowError(f"a devstack process (pid {proc.pid}) did not start its {count} nodes"
                             + (f": exit status {proc.poll()}" if proc.poll() is not None else ""),
                             hint="its error is above; try fewer nodes per process (more --processes)")

    def dead(self) -> list[int]:
        """The pids of workers that have exited."""
        return [p.pid for p in self.procs if p.poll() is not None]

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30 + sum(self.counts) / 50
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for i in range(len(self.procs)):  # each worker removed its nodes' folders; these are empty
            shutil.rmtree(self.root / f"process-{i}", ignore_errors=True)


def _worker(settings: dict) -> None:
    from .devstack import Devstack
    from .messages import Capacity
    from .trust import Trust

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    trust = Trust(settings["trust"]) if settings["trust"] else None
    with Devstack(settings["url"], settings["nodes"], root=Path(settings["root"]), labels=[settings["labels"]],
                  advertise=settings["advertise"], keep=False, shared=True, trust=trust,
                  capacity=Capacity.model_validate(settings["capacity"])):
        print(f"ready {settings['nodes']}", flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
