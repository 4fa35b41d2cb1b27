"""The peer network, measured: per-shard overhead through the network beside the
embedded run and plain Prefect; start-up latencies; the largest devstack this machine
runs a 1000-shard job on.

    python bench/network_bench.py overhead [N]       (default 1000 trivial shards)
    python bench/network_bench.py latency
    python bench/network_bench.py scale [NODES ...]  (default 100 500 1000 2000)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("BFLOW_HOME", tempfile.mkdtemp(prefix="bflow-bench-"))
sys.path.insert(0, str(Path(__file__).parent))
from bacalhau_flow.flow.prefect_api import use_prefect  # noqa: E402

use_prefect()

from overhead_bench import prefect, settle  # noqa: E402

from bacalhau_flow.flow.runner import run_pipeline  # noqa: E402
from bacalhau_flow.network.devstack import Devstack  # noqa: E402
from bacalhau_flow.network.messages import Capacity  # noqa: E402
from bacalhau_flow.spec import load_spec_text  # noqa: E402

ROOT = Path(tempfile.mkdtemp(prefix="bflow-bench-data-"))


def trivial_pipeline(n: int):
    data = ROOT / f"data-{n}"
    if not data.exists():
        data.mkdir()
        for i in range(n):
            (data / f"d{i:05}").write_text("x")
    (pipeline,) = load_spec_text(f"pipeline: net{n}\ninput: {{url: {data}, glob: '/*'}}\n"
                                 "transform: {cmd: ['true']}\nresources: {cpu: 0.1, memory: 16Mi, disk: 1Mi}\n")
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
                if nodes and await requester._bid(nodes[0].id, request, {}):
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


def rss_bytes() -> int:
    """This process's resident memory now (not its peak)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def scale(sizes: list[int], shards: int = 1000) -> None:
    """The largest in-process devstack (memory transport) that joins and completes a 1000-shard job."""
    timed_run(2)
    for nodes in sizes:
        settle()
        rss_before = rss_bytes()
        url = f"memory://scale-{uuid.uuid4().hex[:6]}"
        joined = time.perf_counter()
        capacity = Capacity(cpu=1, memory=2**30, disk=2**30)
        with Devstack(url, nodes, root=ROOT / f"scale-{nodes}", capacity=capacity, announce_seconds=5.0):
            joined = time.perf_counter() - joined
            per_node_kib = max(0, rss_bytes() - rss_before) / nodes / 1024
            seconds, _ = timed_run(shards, url)
        print(f"  {nodes:>5} nodes: joined in {joined:5.2f} s, ~{per_node_kib:.0f} KiB per node, "
              f"{shards} shards in {seconds:6.2f} s", flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "overhead"
    args = [int(a) for a in sys.argv[2:]]
    if what == "overhead":
        overhead(args[0] if args else 1000)
    elif what == "latency":
        latency()
    elif what == "scale":
        scale(args or [100, 500, 1000, 2000])
    else:
        sys.exit(__doc__)
