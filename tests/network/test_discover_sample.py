"""A job's requester reads a sample of the answers to its discover (network/requester.py
DISCOVER_SAMPLE): the others are never verified, so its cost does not grow with the network.
It still hears every node before it says that no node can run a shard, and asks for more
when the nodes it knows are full."""

import asyncio
import uuid

from bacalhau_flow.network import protocol as p
from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.network.identity import Identity
from bacalhau_flow.network.messages import Capacity, InputRef, ResourceAsk, ShardRequest, TransformRef
from bacalhau_flow.network.requester import Requester
from bacalhau_flow.storage import ContentStore
from bacalhau_flow.transports.memory import MemoryTransport
from bacalhau_flow.transports.signing import SignedTransport

ONE_SLOT = Capacity(cpu=1, memory=2**30, disk=2**30)


def _request(tmp_path, index: int, seconds: float = 0) -> ShardRequest:
    seed = tmp_path / "seed"
    seed.write_text("x\n")
    return ShardRequest(job_id="j-sample", pipeline="p", shard_index=index, shard_id=f"s{index}", shard_count=1,
                        inputs=[InputRef(name="seed", url=str(seed))], datums=[{"seed": ["/seed"]}],
                        resources=ResourceAsk(cpu=1, memory=2**20, disk=2**20),
                        transform=TransformRef(cmd=["sh", "-c", f"sleep {seconds}"]))


def _requester(url: str, tmp_path) -> Requester:
    return Requester(SignedTransport(MemoryTransport(url), Identity.generate()), ContentStore(tmp_path / "store"))


def _counting_opens(monkeypatch) -> list[str]:
    """Where each envelope a SignedTransport checked was received."""
    opened: list[str] = []
    check = SignedTransport._open

    def counted(self, envelope, where, expected):
        opened.append(where)
        return check(self, envelope, where, expected)

    monkeypatch.setattr(SignedTransport, "_open", counted)
    return opened


def test_a_requester_verifies_only_the_sample_of_answers_it_reads(tmp_path, monkeypatch):
    url = f"memory://sample-{uuid.uuid4().hex[:8]}"
    with Devstack(url, nodes=12, capacity=ONE_SLOT, root=tmp_path / "nodes", gateway_port=None) as stack:
        opened = _counting_opens(monkeypatch)

        async def sampled():
            requester = _requester(url, tmp_path)
            await requester.start(expect_nodes=1, spread=0.2, sample=4)
            await asyncio.sleep(0.6)  # past the spread: every node has answered
            known = len(requester.nodes)
            await requester.stop()
            return known, requester.id

        known, requester_id = stack.call(sampled())
        answers = [w for w in opened if w == f"on {p.requester_subject(requester_id, 'info')}"]

        async def whole():  # without a sample (`bflow nodes`): all of them
            requester = _requester(url, tmp_path)
            await requester.start(expect_nodes=12, spread=0.2)
            await requester.stop()
            return len(requester.nodes)

        everyone = stack.call(whole())
    assert known == 4
    assert len(answers) == 4
    assert everyone == 12


def test_a_shard_only_a_node_outside_the_sample_can_run_is_placed_there(tmp_path):
    url = f"memory://sample-{uuid.uuid4().hex[:8]}"
    labels = [{"zone": "a"} for _ in range(7)] + [{"zone": "b"}]
    with Devstack(url, nodes=8, capacity=ONE_SLOT, labels=labels, root=tmp_path / "nodes", gateway_port=None) as stack:
        only = stack.nodes[7].id

        async def run():
            requester = _requester(url, tmp_path)
            await requester.start(expect_nodes=1, spread=0.2, sample=1)
            while len(requester.nodes) < 1:
                await asyncio.sleep(0.01)
            first = set(requester.nodes)
            if only in first:  # the sample happened to hold it: make it a sample without it
                requester.nodes.pop(only)
                requester._live.discard(only)
                requester._roster += 1
                first = set(requester.nodes)
            result = await requester.run(_request(tmp_path, 0), selector={"zone": "b"})
            await requester.stop()
            return first, result

        first, result = stack.call(run())
    assert only not in first
    assert result.state == "completed", result.error
    assert result.node == only


def test_a_requester_whose_sample_is_full_reads_a_larger_one(tmp_path, monkeypatch):
    monkeypatch.setattr(p, "REDISCOVER_SECONDS", 0.0)
    url = f"memory://sample-{uuid.uuid4().hex[:8]}"
    with Devstack(url, nodes=10, capacity=ONE_SLOT, root=tmp_path / "nodes", gateway_port=None) as stack:

        async def run():
            requester = _requester(url, tmp_path)
            await requester.start(expect_nodes=2, spread=0.05, sample=2)
            await asyncio.sleep(0.2)
            before = len(requester.nodes)
            results = await asyncio.gather(*(requester.run(_request(tmp_path, i, 1)) for i in range(6)))
            after, sample = len(requester.nodes), requester.sample
            await requester.stop()
            return before, after, sample, results

        before, after, sample, results = stack.call(run())
    assert before == 2
    assert all(r.state == "completed" for r in results), [r.error for r in results]
    assert sample > 2 and after > 2
    assert len({r.node for r in results}) > 2  # not all queued on the two it knew first
