"""The peer network, measured: per-shard overhead through the network beside the
embedded run and plain Prefect; start-up latencies; the largest devstack this machine
runs a 1000-shard job on.

    python bench/network_bench.py overhead [N]       (default 1000 trivial shards)
    python bench/network_bench.py latency
    python bench/network_bench.py scale [NODES ...]  (default 1000 10000, beside 3)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

OWN_HOME = "BFLOW_HOME" not in os.environ  # then its Prefect server is stopped at the end
os.environ.setdefault("BFLOW_HOME", tempfile.mkdtemp(prefix="bflow-bench-"))
sys.path.insert(0, str(Path(__file__).parent))
from bacalhau_flow.flow.prefect_api import use_prefect  # noqa: E402

use_prefect()

from overhead_bench import prefect  # noqa: E402
from prefect_server import settle, stop_own_server  # noqa: E402

from bacalhau_flow.flow.runner import run_pipeline  # noqa: E402
from bacalhau_flow.network.devstack import Devstack  # noqa: E402
from bacalhau_flow.spec import load_spec_text  # noqa: E402

ROOT = Path(tempfile.mkdtemp(prefix="bflow-bench-data-"))


def trivial_pipeline(n: int):
    data = ROOT / f"data-{n}"
    if not data.exists():
        data.mkdir()
        for i in range(n):
            (data / f"d{i:05}").write_text("x")
    (pipeline,) = load_spec_text(f"pipeline: net{n}\ninput: {{url: {data}, glob: '/*'}}\n"
                                 "transform: {cmd: ['true']}\nresources: {cpu: 0.01, memory: 1Mi, disk: 1Mi}\n")
    return pipeline


def timed_run(n: int, network: str | None = None, **kw) -> tuple[float, float | None]:
    """Seconds for the whole job, and seconds from submission to the first shard running."""
    first: list[float] = []
    started = time.perf_counter()

    def progress(index: int, state: str) -> None:
        if state == "running" and not first:
            first.append(time.perf_counter() - started)

    job = run_pipeline(trivial_pipeline(n), network=network, on_progress=progress, **kw)
    assert job.state == "completed", job.error
    return time.perf_counter() - started, (first or [None])[0]


def overhead(n: int) -> None:
    from bacalhau_flow_nats.server import NatsServer

    timed_run(2)  # warm the Prefect server and imports
    settle()
    rows = [("plain prefect", prefect(n), None)]
    settle()
    rows.append(("bflow embedded", *timed_run(n)))
    settle()
    url = f"memory://bench-{uuid.uuid4().hex[:6]}"
    with Devstack(url, 3, root=ROOT / "mem-nodes"):
        rows.append(("bflow memory devstack (3 nodes)", *timed_run(n, url)))
    settle()
    server = NatsServer().start()
    try:
        with Devstack(server.url, 3, root=ROOT / "nats-nodes"):
            rows.append(("bflow NATS devstack (3 nodes)", *timed_run(n, server.url)))
    finally:
        server.stop()
    embedded = rows[1][1]
    print(f"{n} trivial shards; ratio against the embedded run")
    for name, seconds, first in rows:
        first_s = f"{first:.2f}" if first is not None else "-"
        print(f"  {name:<34} {seconds:7.2f} s  {1000 * seconds / n:6.2f} ms/shard  first shard {first_s:>5} s"
              f"  x{seconds / embedded:.2f}")


def latency() -> None:
    """From `bflow node` start to its first bid, and from submission to the first shard running."""
    import asyncio

    from bacalhau_flow_nats.server import NatsServer

    from bacalhau_flow.network.requester import Requester
    from bacalhau_flow.storage import ContentStore
    from bacalhau_flow.network.identity import Identity
    from bacalhau_flow.transports import transport_for
    from bacalhau_flow.transports.signing import SignedTransport

    server = NatsServer().start()

    async def first_bid() -> float:
        requester = Requester(SignedTransport(transport_for(server.url), Identity.generate()),
                              ContentStore(ROOT / "lat-store"))
        await requester.transport.connect()
        await requester.start(expect_nodes=0, wait=0)
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "bacalhau_flow.cli", "node", "--network", server.url,
                                 "--name", "latency"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            from bacalhau_flow.network.messages import ShardRequest, TransformRef
            request = ShardRequest(job_id="j-lat", pipeline="p", shard_index=0, shard_id="s", shard_count=1,
                                   transform=TransformRef(cmd=["true"]), inputs=[], datums=[])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                nodes = requester.live_nodes()
                if nodes and await requester._bid(nodes[0].id, {"request": request.model_dump(), "selector": {}}):
                    return time.perf_counter() - started
                await asyncio.sleep(0.01)
            raise RuntimeError("the node never answered a bid")
        finally:
            proc.terminate()
            proc.wait()
            await requester.transport.close()

    try:
        print(f"bflow node start -> first bid answered: {asyncio.run(first_bid()):.2f} s (includes Python start-up)")
    finally:
        server.stop()
    timed_run(2)
    settle()
    total, first = timed_run(1)
    print(f"job submission -> first shard running (embedded, warm Prefect server): {first:.3f} s; whole 1-shard job {total:.2f} s")


def rss_of(pid: int) -> int:
    """The resident memory of process `pid` now, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def idle_messages(url: str, seconds: float) -> int:
    """Messages on the announcement subject in `seconds`, as any listener receives them."""
    import asyncio

    from bacalhau_flow.network import protocol as p
    from bacalhau_flow.network.identity import Identity
    from bacalhau_flow.transports import transport_for
    from bacalhau_flow.transports.signing import SignedTransport

    async def count() -> int:
        transport = SignedTransport(transport_for(url), Identity.generate())
        await transport.connect()
        seen = [0]

        async def one(envelope):
            seen[0] += 1

        await transport.subscribe(p.ANNOUNCE, one)
        await asyncio.sleep(seconds)
        await transport.close()
        return seen[0]

    return asyncio.run(count())


def listed(url: str) -> tuple[int, float]:
    """How many nodes `bflow nodes` finds, and the seconds it took."""
    import asyncio

    from bacalhau_flow.network.census import discover

    started = time.perf_counter()
    found = asyncio.run(discover(url, wait=120))
    return len(found), time.perf_counter() - started


def job_on(url: str, shards: int) -> tuple[float, float]:
    """Wall seconds of a job of `shards` trivial shards, and the requester's CPU seconds (this
    process: the requester and its Prefect client; the nodes run in other processes)."""
    cpu = time.process_time()
    seconds, _ = timed_run(shards, url, reprocess=True)  # the same shards each time: none reused
    return seconds, time.process_time() - cpu


def scale(sizes: list[int], shards: int = 1000, per_process: int = 1250) -> None:
    """Devstacks of thousands of nodes over several processes on one nats-server, beside 3
    nodes: joining, `bflow nodes`, a job of `shards` shards (time and requester CPU), idle
    traffic per node and memory per node."""
    from bacalhau_flow_nats.server import NatsServer

    from bacalhau_flow.network.devstack_processes import DevstackProcesses

    timed_run(2)
    rows = []
    for nodes in [3, *sizes]:
        settle()
        server = NatsServer().start()
        processes = max(1, -(-nodes // per_process))
        try:
            joined = time.perf_counter()
            with DevstackProcesses(server.url, nodes, processes, ROOT / f"scale-{nodes}") as stack:
                joined = time.perf_counter() - joined
                count, list_s = listed(server.url)
                seconds, cpu = job_on(server.url, shards)
                idle = idle_messages(server.url, 30.0) / nodes / 30.0
                rss = sum(rss_of(p.pid) for p in stack.procs)
            with DevstackProcesses(server.url, processes, processes, ROOT / f"empty-{nodes}") as empty:
                base = sum(rss_of(p.pid) for p in empty.procs)  # the same processes, one node each
        finally:
            server.stop()
        rows.append((nodes, processes, joined, count, list_s, seconds, cpu, idle, (rss - base) / nodes / 1024))
    three = rows[0]
    print(f"{shards} trivial shards on NATS devstacks over several processes; ratios against 3 nodes")
    for nodes, processes, joined, count, list_s, seconds, cpu, idle, kib in rows:
        print(f"  {nodes:>6} nodes in {processes:>2} processes: joined {joined:6.1f} s, listed {count:>6} in "
              f"{list_s:5.1f} s, job {seconds:6.1f} s (x{seconds / three[5]:.2f}), requester CPU {cpu:6.1f} s "
              f"(x{cpu / three[6]:.2f}), idle {idle:.3f} msg/node/s, "
              + (f"{kib:5.1f} KiB/node" if nodes >= 100 else "-"), flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "overhead"
    args = [int(a) for a in sys.argv[2:]]
    try:
        if what == "overhead":
            overhead(args[0] if args else 1000)
        elif what == "latency":
            latency()
        elif what == "scale":
            scale(args or [1000, 10000])
        else:
            sys.exit(__doc__)
    finally:
        stop_own_server(OWN_HOME)
