"""Blocks between machines, measured: a shard's output reaching the requester, and local
inputs reaching a node, each beside its floor, in one run.

    python bench/transfer_bench.py output [MB]     (default 200)
    python bench/transfer_bench.py staging [MB]    (default 500, plus 1,000 small files)

output: one `bflow node` process on a real nats-server writes an MB-sized file; the requester collects it
(pull over HTTP from the node's gateway, storage/pull.py) into its own store. Timed from the
node's end of the shard to the requester holding every block, beside a plain HTTP GET of the
same CAR from the node's gateway, and beside the old way (blocks base64 over NATS, two per
request: storage/fetch.py), which stays as the fallback.

staging: a shard over 1,000 small local files and one MB-sized file, sent by the requester
(network/shipping.py) and staged on the node from the requester's gateway (network/staging.py),
beside `cp -r` of the same files.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("BFLOW_HOME", tempfile.mkdtemp(prefix="bflow-bench-"))

from bacalhau_flow_nats.server import NatsServer  # noqa: E402

from bacalhau_flow.network.identity import Identity  # noqa: E402
from bacalhau_flow.network.messages import InputRef, ShardRequest, TransformRef  # noqa: E402
from bacalhau_flow.network.requester import Requester  # noqa: E402
from bacalhau_flow.network.shipping import ship_local_inputs  # noqa: E402
from bacalhau_flow.network.staging import stage_inputs  # noqa: E402
from bacalhau_flow.storage import ContentStore  # noqa: E402
from bacalhau_flow.storage.fetch import fetch_dag  # noqa: E402
from bacalhau_flow.storage.gateway import Gateway  # noqa: E402
from bacalhau_flow.storage.pull import pull  # noqa: E402
from bacalhau_flow.transports import transport_for  # noqa: E402
from bacalhau_flow.transports.signing import SignedTransport  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="bflow-bench-transfer-"))


def output(mb: int) -> None:
    server = NatsServer().start()
    me = Identity.generate()
    node = subprocess.Popen([sys.executable, "-m", "bacalhau_flow.cli", "node", "--network", server.url,
                             "--trust", me.node_id, "--allow-path", str(WORK)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, BFLOW_HOME=str(WORK / "node-home")))
    try:
        node_id = node.stdout.readline().decode().strip()  # printed once it has joined

        async def collect():
            requester = Requester(SignedTransport(transport_for(server.url), me), ContentStore(WORK / "requester"))
            await requester.transport.connect()
            await requester.start(expect_nodes=1)
            (WORK / "seed").write_text("seed\n")
            request = ShardRequest(job_id="j-bench", pipeline="bench", shard_index=0, shard_id="s0",
                                   shard_count=1, inputs=[InputRef(name="seed", url=str(WORK / "seed"))],
                                   datums=[{"seed": ["/seed"]}],
                                   transform=TransformRef(cmd=["sh", "-c", f"head -c {mb}M /dev/urandom "
                                                                            "> $BFLOW_OUTPUTS/big"]))
            result = await requester.run(request)
            got = time.time()
            gateway = requester.nodes[node_id].gateway
            await requester.stop()
            await requester.transport.close()
            return result, got - result.ended, gateway

        result, pulled, gateway = asyncio.run(collect())
        assert result.state == "completed", result.error
        start = time.perf_counter()
        with urllib.request.urlopen(f"{gateway}/ipfs/{result.outputs_cid}?format=car") as answer:
            size = sum(len(piece) for piece in iter(lambda: answer.read(1 << 20), b""))
        plain = time.perf_counter() - start
        start = time.perf_counter()
        pull(ContentStore(WORK / "pulled-again"), result.outputs_cid, [gateway])
        again = time.perf_counter() - start
        nats = asyncio.run(_over_nats(server.url, node_id, result.outputs_cid))
    finally:
        node.terminate()
        node.wait()
        server.stop()
    mbytes = size / 1e6
    print(f"{mb} MB output, node (its own process) -> requester")
    print(f"  bflow (HTTP pull, CAR): {pulled:6.2f} s  {mbytes / pulled:6.0f} MB/s  (node's end of the shard to "
          "every block here)")
    print(f"  the pull alone:         {again:6.2f} s  {mbytes / again:6.0f} MB/s  (into an empty store)")
    print(f"  plain GET of the CAR:   {plain:6.2f} s  {mbytes / plain:6.0f} MB/s")
    print(f"  over NATS (fallback):   {nats:6.2f} s  {mbytes / nats:6.0f} MB/s")
    print(f"  bflow / plain GET: {pulled / plain:.2f}x")


async def _over_nats(url: str, node_id: str, cid: str) -> float:
    import base64

    from bacalhau_flow.network import protocol as p
    from bacalhau_flow.transports.base import Envelope

    transport = SignedTransport(transport_for(url), Identity.generate())
    await transport.connect()

    async def get_blocks(cids):
        reply = await transport.request(p.node_subject(node_id, "blocks"),
                                        Envelope("blocks", {"cids": cids}, sender=transport.node_id),
                                        p.BLOCKS_TIMEOUT)
        return {c: base64.b64decode(b) for c, b in reply.body["blocks"].items()}

    start = time.perf_counter()
    await fetch_dag(ContentStore(WORK / "over-nats"), cid, get_blocks)
    elapsed = time.perf_counter() - start
    await transport.close()
    return elapsed


def staging(mb: int) -> None:
    data = WORK / "data"
    (data / "small").mkdir(parents=True)
    for i in range(1000):
        (data / "small" / f"{i:04}.txt").write_bytes(os.urandom(2048))
    with open(data / "big.bin", "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    subprocess.run(["sync"])

    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(data), str(WORK / "cp-copy")], check=True)
    cp = time.perf_counter() - start

    requester_store, node_store = ContentStore(WORK / "requester"), ContentStore(WORK / "node")
    loop = asyncio.new_event_loop()
    gateway = Gateway(requester_store)
    url = loop.run_until_complete(gateway.start())
    threading.Thread(target=loop.run_forever, daemon=True).start()
    request = ShardRequest(job_id="j-bench", pipeline="bench", shard_index=0, shard_id="s0", shard_count=1,
                           inputs=[InputRef(name="data", url=str(data))], datums=[{"data": ["/small", "/big.bin"]}],
                           transform=TransformRef(cmd=["true"]), providers=[url])
    start = time.perf_counter()
    shipped = ship_local_inputs(request, requester_store)
    ship = time.perf_counter() - start
    start = time.perf_counter()
    stage_inputs(shipped, WORK / "staged", node_store)
    stage = time.perf_counter() - start
    total = ship + stage
    print(f"staging 1,000 small files + one {mb} MB file on a node that cannot see them")
    print(f"  bflow: {total:6.2f} s  (requester hashes and stores: {ship:.2f} s; node pulls and stages: {stage:.2f} s)")
    print(f"  cp -r: {cp:6.2f} s")
    print(f"  bflow / cp: {total / cp:.2f}x")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "output"
    size = int(sys.argv[2]) if len(sys.argv) > 2 else (200 if what == "output" else 500)
    try:
        {"output": output, "staging": staging}[what](size)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
