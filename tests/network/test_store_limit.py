"""A node under `--max-store`: once the requester has acknowledged a result, the node may
evict it; the requester keeps every output, and the node's store stays near its limit."""

import asyncio
import uuid

from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.network.messages import InputRef, ShardRequest, TransformRef
from bacalhau_flow.network.requester import Requester
from bacalhau_flow.storage import ContentStore
from bacalhau_flow.network.identity import Identity
from bacalhau_flow.transports.memory import MemoryTransport
from bacalhau_flow.transports.signing import SignedTransport

MB = 1 << 20


def test_acknowledged_outputs_are_evicted_and_the_requester_keeps_them(tmp_path):
    url = f"memory://limit-{uuid.uuid4().hex[:8]}"
    seed = tmp_path / "seed"
    seed.write_text("x\n")
    with Devstack(url, nodes=1, root=tmp_path / "nodes", max_store=int(1.5 * MB)) as stack:
        node = stack.nodes[0]

        async def three_shards():
            transport = SignedTransport(MemoryTransport(url), Identity.generate())  # a devstack signs
            await transport.connect()
            requester = Requester(transport, ContentStore(tmp_path / "requester"))
            await requester.start(expect_nodes=1)
            results = []
            for i in range(3):  # one after another: each output is acknowledged before the next
                request = ShardRequest(job_id="j-limit", pipeline="limit", shard_index=i, shard_id=f"s{i}",
                                       shard_count=3, inputs=[InputRef(name="seed", url=str(seed))],
                                       datums=[{"seed": ["/seed"]}],
                                       transform=TransformRef(cmd=["sh", "-c", "head -c 1048576 /dev/urandom "
                                                                               "> $BFLOW_OUTPUTS/part"]))
                results.append(await requester.run(request))
            await asyncio.sleep(0.5)  # the node evicts after the acknowledgement
            await requester.stop()
            return requester, results

        requester, results = stack.call(three_shards())
        assert [r.state for r in results] == ["completed"] * 3
        for r in results:  # the requester holds every output whole
            assert len(requester.store.cat(next(e.cid for e in requester.store.ls(r.outputs_cid)))) == MB
        assert node.budget.size() <= int(1.5 * MB)
        assert not all(node.store.has(r.outputs_cid) for r in results)  # the node let some go
