"""`bflow nodes` (network/census.py) listens until the answers to its discover stop coming; a
busy node that answers only after the usual quiet second is still listed."""

import asyncio
import time
import uuid

from bacalhau_flow.network import protocol as p
from bacalhau_flow.network.census import FIRST_ANSWER_S, QUIET_S, discover
from bacalhau_flow.network.identity import Identity
from bacalhau_flow.network.messages import Capacity, NodeInfo
from bacalhau_flow.transports.base import Envelope
from bacalhau_flow.transports.memory import MemoryTransport
from bacalhau_flow.transports.signing import SignedTransport

SMALL = Capacity(cpu=1, memory=2**30, disk=2**30)


async def _late_node(url: str, delay: float) -> SignedTransport:
    """A peer on the network that answers each discover `delay` s late, as a busy node does."""
    transport = SignedTransport(MemoryTransport(url), Identity.generate())
    await transport.connect()
    me = transport.node_id
    info = NodeInfo(id=me, version="x", executors=["local"], total=SMALL, free=SMALL,
                    public_key=transport.identity.public_key_b64)

    async def on_discover(envelope: Envelope) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            await transport.publish(envelope.body["reply"], Envelope("node_info", info.model_dump(), sender=me))

        asyncio.ensure_future(later())

    await transport.subscribe(p.DISCOVER, on_discover)
    return transport


def test_a_node_that_answers_late_is_still_listed():
    url = f"memory://late-{uuid.uuid4().hex[:8]}"
    delay = QUIET_S + 0.8  # past the quiet second, within the wait for a first answer
    assert delay < FIRST_ANSWER_S

    async def run():
        node = await _late_node(url, delay)
        started = time.monotonic()
        found = await discover(url, wait=10.0)
        took = time.monotonic() - started
        await node.close()
        return node.node_id, found, took

    node_id, found, took = asyncio.run(run())
    assert [n.id for n in found] == [node_id]
    assert took < delay + QUIET_S + 1.0  # and then it stopped listening soon


def test_an_empty_network_is_listed_as_empty_within_seconds():
    url = f"memory://empty-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    assert asyncio.run(discover(url, wait=10.0)) == []
    assert time.monotonic() - started < FIRST_ANSWER_S + QUIET_S + 1.0
