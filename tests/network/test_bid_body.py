"""A bid request leaves the shard's datums out: a node bids on the transform, the resources
and the requester alone (ComputeNode.bid), so only the accept carries the datums, to the
one node that runs the shard (a shard of 1,000 datums asked of 3 bidders sent them 4 times)."""

import uuid

from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.network.identity import Identity
from bacalhau_flow.network.messages import InputRef, ResourceAsk, ShardRequest, TransformRef
from bacalhau_flow.network.node import ComputeNode
from bacalhau_flow.network.requester import Requester
from bacalhau_flow.storage import ContentStore
from bacalhau_flow.transports.memory import MemoryTransport
from bacalhau_flow.transports.signing import SignedTransport


def test_bids_are_asked_without_the_datums_and_the_accept_carries_them(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a", "b", "c"):
        (data / name).write_text(name)
    seen: dict[str, list[int]] = {"bid_request": [], "accept": []}
    for handler in ("_on_bid", "_on_accept"):
        original = getattr(ComputeNode, handler)

        def spying(original):
            async def spy(self, envelope):
                seen[envelope.kind].append(len(envelope.body["request"]["datums"]))
                return await original(self, envelope)
            return spy

        monkeypatch.setattr(ComputeNode, handler, spying(original))
    request = ShardRequest(job_id="j-bid", pipeline="p", shard_index=0, shard_id="s0", shard_count=1,
                           inputs=[InputRef(name="in", url=str(data))],
                           datums=[{"in": ["/a"]}, {"in": ["/b"]}, {"in": ["/c"]}],
                           resources=ResourceAsk(cpu=0.1, memory=2**20, disk=2**20),
                           transform=TransformRef(cmd=["sh", "-c", 'cat "$BFLOW_INPUTS"/in/* > "$BFLOW_OUTPUTS/all"']))
    url = f"memory://bid-{uuid.uuid4().hex[:8]}"
    with Devstack(url, nodes=3, root=tmp_path / "nodes") as stack:
        async def run():
            requester = Requester(SignedTransport(MemoryTransport(url), Identity.generate()),
                                  ContentStore(tmp_path / "store"))
            await requester.start(expect_nodes=3)
            result = await requester.run(request)
            await requester.stop()
            return result

        result = stack.call(run())
    assert result.state == "completed", result.error
    assert seen["bid_request"] and set(seen["bid_request"]) == {0}  # every bidder asked, none sent the datums
    assert seen["accept"] == [3]
    store = ContentStore(tmp_path / "store")
    assert {e.name: store.cat(e.cid) for e in store.ls(result.outputs_cid)} == {"all": b"abc"}
