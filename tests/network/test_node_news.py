"""Nodes announce news, never only that they are still there (network/protocol.py): an idle
network is silent, so no listener hears more as the network grows; a requester drops a node
whose bids go unanswered (bids that time out together counting once) and finds it again by
asking every node; a node whose connection came back announces itself."""

import asyncio
import time
import uuid

import pytest

from bacalhau_flow.network import protocol as p
from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.network.identity import Identity
from bacalhau_flow.network.messages import InputRef, ShardRequest, TransformRef
from bacalhau_flow.network.requester import Requester
from bacalhau_flow.storage import ContentStore
from bacalhau_flow.testing.requires import import_or_skip
from bacalhau_flow.transports import transport_for
from bacalhau_flow.transports.base import Envelope, RequestTimeout
from bacalhau_flow.transports.memory import MemoryTransport
from bacalhau_flow.transports.signing import SignedTransport


@pytest.fixture
def quick_checks(monkeypatch):
    """Nodes look for news every 0.1 s (5 s by default), and requesters may ask again soon."""
    monkeypatch.setattr(p, "CHECK_SECONDS", 0.1)
    monkeypatch.setattr(p, "REDISCOVER_SECONDS", 0.5)


def _request(tmp_path, index: int = 0) -> ShardRequest:
    seed = tmp_path / "seed"
    seed.write_text("x\n")
    return ShardRequest(job_id="j-news", pipeline="p", shard_index=index, shard_id=f"s{index}", shard_count=1,
                        inputs=[InputRef(name="seed", url=str(seed))], datums=[{"seed": ["/seed"]}],
                        transform=TransformRef(cmd=["sh", "-c", "echo done > $BFLOW_OUTPUTS/out"]))


async def _listen(url: str, heard: list[str]):
    """A transport subscribed to the announcements; each announcer's id goes to `heard`."""
    transport = SignedTransport(transport_for(url), Identity.generate())
    await transport.connect()

    async def one(envelope: Envelope) -> None:
        heard.append(envelope.sender)

    await transport.subscribe(p.ANNOUNCE, one)
    return transport


def test_an_idle_network_is_silent_and_a_node_announces_its_load(tmp_path, quick_checks):
    url = f"memory://silent-{uuid.uuid4().hex[:8]}"
    with Devstack(url, nodes=3, root=tmp_path / "nodes") as stack:
        async def run():
            heard: list[str] = []
            listener = await _listen(url, heard)
            await asyncio.sleep(1.5)  # some fifteen looks for news by each node
            idle = list(heard)
            requester = Requester(SignedTransport(MemoryTransport(url), Identity.generate()),
                                  ContentStore(tmp_path / "store"))
            await requester.start(expect_nodes=3)
            result = await requester.run(_request(tmp_path))
            await asyncio.sleep(1.0)  # its load changed twice: announced soon after
            await requester.stop()
            await listener.close()
            return idle, heard, result

        idle, heard, result = stack.call(run())
    assert idle == []
    assert result.state == "completed", result.error
    assert result.node in heard


class SilentBids(SignedTransport):
    """A requester's transport on which the first `BID_MISSES` bids go unanswered, and that
    counts the discovers it sends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.missed: list[str] = []
        self.discovers = 0

    async def request(self, subject, envelope, timeout):
        if envelope.kind == "bid_request" and len(self.missed) < p.BID_MISSES:
            self.missed.append(subject)
            raise RequestTimeout(f"no reply on {subject} within {timeout:g}s")
        return await super().request(subject, envelope, timeout)

    async def publish(self, subject, envelope):
        self.discovers += subject == p.DISCOVER
        return await super().publish(subject, envelope)


def test_a_node_whose_bids_go_unanswered_is_dropped_and_found_again_by_asking(tmp_path, quick_checks):
    url = f"memory://missed-{uuid.uuid4().hex[:8]}"
    with Devstack(url, nodes=1, root=tmp_path / "nodes") as stack:
        async def run():
            transport = SilentBids(MemoryTransport(url), Identity.generate())
            requester = Requester(transport, ContentStore(tmp_path / "store"))
            await requester.start(expect_nodes=1)
            result = await requester.run(_request(tmp_path))
            await requester.stop()
            return transport, result

        transport, result = stack.call(run())
    assert len(transport.missed) == p.BID_MISSES  # then it was dropped: no node left for the shard
    assert transport.discovers == 2  # so it asked every node again, and the node answered
    assert result.state == "completed", result.error
    assert result.node == stack.nodes[0].id


def test_bids_that_time_out_together_count_as_one_miss(tmp_path, monkeypatch):
    """Four bids asked side by side (as placements running together ask them) that all go
    unanswered, as when this process's loop stalls past BID_TIMEOUT, are one miss: the node
    stays. A bid asked after them and unanswered too is the second miss in a row: dropped."""
    monkeypatch.setattr(p, "BID_TIMEOUT", 0.2)
    url = f"memory://stalled-{uuid.uuid4().hex[:8]}"

    async def run():
        node, answer = MemoryTransport(url), asyncio.Event()

        async def silent(envelope: Envelope) -> Envelope:
            await answer.wait()  # never, while the bids wait
            return Envelope("bid", {}, sender="n-silent")

        await node.subscribe(p.node_subject("n-silent", "bid"), silent)
        requester = Requester(MemoryTransport(url), ContentStore(tmp_path / "store"))
        requester._live.add("n-silent")  # as if it had announced itself
        side_by_side = await asyncio.gather(*(requester._bid("n-silent", {}) for _ in range(4)))
        together = ("n-silent" in requester._live, requester._missed["n-silent"])
        later = await requester._bid("n-silent", {})
        answer.set()
        await node.close()
        return side_by_side, together, later, ("n-silent" in requester._live, requester._missed["n-silent"])

    side_by_side, together, later, after = asyncio.run(run())
    assert side_by_side == [None] * 4 and later is None  # no bid from it
    assert p.BID_MISSES == 2
    assert together == (True, 1)
    assert after == (False, 2)


def test_a_node_back_from_an_outage_announces_itself(tmp_path, quick_checks):
    """Each node's own announcing is recorded: a listener of its own would be reconnecting
    too, and could miss an announcement sent before it was back."""
    nats = import_or_skip("bacalhau_flow_nats.server", "the NATS plugin", "bash scripts/setup.sh installs it")
    server = nats.NatsServer().start()
    try:
        with Devstack(server.url, nodes=2, root=tmp_path / "nodes") as stack:
            ids = {n.id for n in stack.nodes}
            announced: list[str] = []
            for node in stack.nodes:
                async def recorded(*args, _node=node, _announce=node.announce, **kwargs):
                    announced.append(_node.id)
                    await _announce(*args, **kwargs)

                node.announce = recorded
            time.sleep(1.0)
            assert announced == []  # idle: nothing to say
            server.restart(down_for=1.0)
            deadline = time.monotonic() + 20
            while not ids <= set(announced) and time.monotonic() < deadline:
                time.sleep(0.2)
        assert ids <= set(announced), f"announced: {announced}, not every node of {ids}"
    finally:
        server.stop()


def test_a_node_announces_an_executor_that_came_up_and_its_process_looks_on_one_timer(
        tmp_path, quick_checks, monkeypatch):
    """The nodes of one process look for news on one shared timer (network/news.py); a node
    that could not offer docker looks again, and announces docker once it can."""
    from bacalhau_flow.network import node as node_module
    from bacalhau_flow.network import news

    engine = {"up": False}

    def offered(names=None):
        names = ["local", "docker"] if names is None else names
        up = [n for n in names if n != "docker" or engine["up"]]
        return up, {n: "no Docker engine" for n in names if n not in up}

    monkeypatch.setattr(node_module, "offered_executors", offered)
    monkeypatch.setattr(node_module, "REPROBE_SECONDS", 0.2)
    url = f"memory://probe-{uuid.uuid4().hex[:8]}"
    with Devstack(url, nodes=3, root=tmp_path / "nodes") as stack:
        async def run():
            rounds = [n._news for n in stack.nodes]
            assert rounds[0] is not None and all(r is rounds[0] for r in rounds)
            assert len(news._ROUNDS[asyncio.get_running_loop()]) == 1
            heard: list[dict] = []
            listener = SignedTransport(transport_for(url), Identity.generate())
            await listener.connect()

            async def one(envelope: Envelope) -> None:
                heard.append(envelope.body)

            await listener.subscribe(p.ANNOUNCE, one)
            await asyncio.sleep(0.6)  # looks again, finds nothing new: silent
            quiet = list(heard)
            engine["up"] = True
            await asyncio.sleep(1.0)
            await listener.close()
            return quiet, heard

        quiet, heard = stack.call(run())
    assert quiet == []
    assert {b["id"] for b in heard if "docker" in b["executors"] and not b["unavailable"]} == \
        {n.id for n in stack.nodes}
