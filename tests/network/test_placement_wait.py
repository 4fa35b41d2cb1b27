"""A shard that would queue on every node a requester knows waits for the answers to its
discover that may still come (network/placement.py), so a node with room that answered late
gets it: the 100-datum scenario ran all its shards on one node when the suite was busy."""

import asyncio
import uuid

from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.network.identity import Identity
from bacalhau_flow.network.messages import Capacity, InputRef, ResourceAsk, ShardRequest, TransformRef
from bacalhau_flow.network.node import ComputeNode
from bacalhau_flow.network.requester import Requester
from bacalhau_flow.storage import ContentStore
from bacalhau_flow.transports.memory import MemoryTransport
from bacalhau_flow.transports.signing import SignedTransport


def _request(tmp_path, index: int) -> ShardRequest:
    seed = tmp_path / "seed"
    seed.write_text("x\n")
    return ShardRequest(job_id="j-wait", pipeline="p", shard_index=index, shard_id=f"s{index}", shard_count=2,
                        inputs=[InputRef(name="seed", url=str(seed))], datums=[{"seed": ["/seed"]}],
                        resources=ResourceAsk(cpu=1, memory=2**20, disk=2**20),
                        transform=TransformRef(cmd=["sh", "-c", "sleep 2"]))  # past the wait


def test_a_shard_waits_for_a_late_answer_rather_than_queue_on_the_node_that_answered_first(tmp_path, monkeypatch):
    late: set[str] = set()
    answer = ComputeNode._on_discover

    async def maybe_late(self, envelope):
        if self.id in late:
            await asyncio.sleep(0.4)
        return await answer(self, envelope)

    monkeypatch.setattr(ComputeNode, "_on_discover", maybe_late)
    url = f"memory://wait-{uuid.uuid4().hex[:8]}"
    one_slot = Capacity(cpu=1, memory=2**30, disk=2**30)
    with Devstack(url, nodes=2, capacity=one_slot, root=tmp_path / "nodes") as stack:
        late.add(stack.nodes[1].id)

        async def run():
            requester = Requester(SignedTransport(MemoryTransport(url), Identity.generate()),
                                  ContentStore(tmp_path / "store"))
            await requester.start(expect_nodes=1, spread=0.05)  # returns with the first answer
            known = {n.id for n in requester.live_nodes()}
            results = await asyncio.gather(*(requester.run(_request(tmp_path, i)) for i in range(2)))
            await requester.stop()
            return known, results

        known, results = stack.call(run())
    assert known == {stack.nodes[0].id}
    assert all(r.state == "completed" for r in results), [r.error for r in results]
    assert {r.node for r in results} == {n.id for n in stack.nodes}
