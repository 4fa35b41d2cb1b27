"""A hostile client on a real nats-server (bacalhau_flow/testing/hostile.py): anyone who can
reach the network. Nodes trust only the requester that started them."""

import asyncio
import time

import pytest

from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.network.identity import Identity
from bacalhau_flow.network.messages import InputRef, ShardRequest, ShardResult, TransformRef
from bacalhau_flow.network.requester import Requester
from bacalhau_flow.network.trust import Trust
from bacalhau_flow.storage import ContentStore
from bacalhau_flow.testing.hostile import Hostile
from bacalhau_flow.testing.requires import import_or_skip
from bacalhau_flow.transports import transport_for
from bacalhau_flow.transports.signing import SignedTransport


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    server_mod = import_or_skip("bacalhau_flow_nats.server", "the NATS plugin (plugins/bacalhau-flow-nats)")
    root = tmp_path_factory.mktemp("hostile")
    owner = Identity.generate()
    server = server_mod.NatsServer().start()
    try:
        with Devstack(server.url, nodes=2, root=root / "nodes", trust=Trust([owner.node_id])) as stack:
            yield server.url, stack, owner, root
    finally:
        server.stop()


def request(root, job: str, index: int = 0, seconds: float = 0) -> ShardRequest:
    """A shard that notes each run in `runs` (so a second run shows) and writes `o`."""
    seed = root / "seed"
    seed.write_text("seed\n")
    cmd = f"sleep {seconds}; echo {job}/{index} >> {root}/runs; echo real > $BFLOW_OUTPUTS/o"
    return ShardRequest(job_id=job, pipeline="hostile", shard_index=index, shard_id=f"s{index}", shard_count=1,
                        inputs=[InputRef(name="seed", url=str(seed))], datums=[{"seed": ["/seed"]}],
                        transform=TransformRef(cmd=["sh", "-c", cmd]))


def runs(root, job: str) -> list[str]:
    path = root / "runs"
    return [line for line in path.read_text().split() if line.startswith(job)] if path.exists() else []


async def requester_for(url: str, owner: Identity, root, nodes: int = 2) -> Requester:
    transport = SignedTransport(transport_for(url), owner)
    await transport.connect()
    requester = Requester(transport, ContentStore(root / "requester-store"))
    await requester.start(expect_nodes=nodes)
    return requester


async def close(requester: Requester) -> None:
    await requester.stop()
    await requester.transport.close()


def test_an_untrusted_key_is_refused_and_its_command_never_runs(network):
    url, stack, _, root = network

    async def attack():
        async with Hostile(url) as attacker:
            return [await attacker.accept(node.id, request(root, "j-evil")) for node in stack.nodes]

    answers = stack.call(attack())
    for answer in answers:
        assert answer["accepted"] is False and "not trusted" in answer["reason"]
    time.sleep(1.0)
    assert runs(root, "j-evil") == []


def test_an_untrusted_requester_learns_why_at_once(network):
    url, stack, _, root = network

    async def run():
        requester = await requester_for(url, Identity.generate(), root)  # a key nobody trusts
        try:
            return await requester.run(request(root, "j-stranger"))
        finally:
            await close(requester)

    from bacalhau_flow.errors import NoNodeCanRun

    started = time.monotonic()
    with pytest.raises(NoNodeCanRun, match="is not trusted by the node: .*bflow node --trust n-"):
        stack.call(run())
    assert time.monotonic() - started < 10


def test_reports_from_anyone_but_the_accepted_node_are_dropped_and_counted(network):
    url, stack, owner, root = network

    async def scenario():
        requester = await requester_for(url, owner, root)
        try:
            async with Hostile(url) as attacker:
                job = "j-forged"
                running = asyncio.ensure_future(requester.run(request(root, job, seconds=2)))
                while f"{job}/0/1" not in requester._accepted:
                    await asyncio.sleep(0.05)
                real_node = requester._accepted[f"{job}/0/1"]
                forged = ShardResult(job_id=job, shard_index=0, shard_id="s0", attempt=1, node=real_node,
                                     state="completed", outputs_cid=requester.store.put_bytes(b"FORGED"))
                await attacker.report(requester.id, forged)
                result = await running
                return result, real_node, requester.dropped[job], requester.store
        finally:
            await close(requester)

    result, real_node, dropped, store = stack.call(scenario())
    assert result.state == "completed" and result.node == real_node
    outputs = {e.name: store.cat(e.cid) for e in store.ls(result.outputs_cid)}
    assert outputs == {"o": b"real\n"}
    assert dropped >= 2  # the progress and the result


def test_every_message_replayed_everywhere_runs_no_shard_twice(network):
    url, stack, owner, root = network

    async def scenario():
        requester = await requester_for(url, owner, root)
        try:
            async with Hostile(url) as attacker:
                await attacker.sniff()
                results = [await requester.run(request(root, "j-replayed", i)) for i in range(3)]
                sent = await attacker.replay_everything()
                await asyncio.sleep(2.0)  # anything a replay started would have run by now
                return results, sent
        finally:
            await close(requester)

    results, sent = stack.call(scenario(), timeout=120)
    assert [r.state for r in results] == ["completed"] * 3
    assert sent > 30
    assert sorted(runs(root, "j-replayed")) == ["j-replayed/0", "j-replayed/1", "j-replayed/2"]


def test_an_accept_replayed_after_the_node_restarts_is_refused(tmp_path, network):
    from bacalhau_flow_nats.server import NatsServer

    _, _, owner, _ = network
    keys = [tmp_path / "node.key"]
    server = NatsServer().start()  # a network of this one node
    url = server.url

    async def accept_once(node_id: str, attacker: Hostile, captured: list):
        requester = await requester_for(url, owner, tmp_path, nodes=1)
        try:
            await attacker.sniff()
            await requester.run(request(tmp_path, "j-restart"))
            captured.extend(c for c in attacker.seen if c.subject == f"bflow.node.{node_id}.accept")
        finally:
            await close(requester)

    captured: list = []
    with Devstack(url, nodes=1, root=tmp_path / "nodes", keys=keys, trust=Trust([owner.node_id])) as stack:
        node_id = stack.nodes[0].id

        async def first():
            async with Hostile(url) as attacker:
                await accept_once(node_id, attacker, captured)

        stack.call(first())
    assert captured and runs(tmp_path, "j-restart") == ["j-restart/0"]
    with Devstack(url, nodes=1, root=tmp_path / "nodes", keys=keys, trust=Trust([owner.node_id])) as stack:
        async def replay():
            async with Hostile(url) as attacker:
                for c in captured:
                    await attacker._raw.publish(c.subject, c.data)
                await attacker._raw.flush()
            await asyncio.sleep(2.0)

        stack.call(replay())
    server.stop()
    assert runs(tmp_path, "j-restart") == ["j-restart/0"]  # the same node, restarted, did not run it again
