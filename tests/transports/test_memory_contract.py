"""The transport contract, run against the in-process memory transport (one MemoryHub per test)."""

import asyncio
import time

import pytest

from bacalhau_flow.testing.transport_contract import TransportContract
from bacalhau_flow.transports.base import Envelope, RequestTimeout, TransportError
from bacalhau_flow.transports.memory import MemoryHub, MemoryTransport


class TestMemoryTransportContract(TransportContract):
    settle = 0.05

    @pytest.fixture
    def make_transport(self):
        hub = MemoryHub()

        async def make() -> MemoryTransport:
            transport = MemoryTransport(hub=hub)
            await transport.connect()
            return transport

        return make


# -- what the memory transport does beyond the contract -------------------------------------
async def _pair(handler):
    hub = MemoryHub()
    asker, server = MemoryTransport(hub=hub), MemoryTransport(hub=hub)
    await server.subscribe("bflow.node.n.ask", handler)
    return asker


def test_a_handler_stopped_before_it_replies_fails_the_request_at_once():
    async def stopped(envelope):
        raise asyncio.CancelledError  # its node's loop closing under it

    async def main():
        asker = await _pair(stopped)
        started = time.monotonic()
        with pytest.raises(TransportError, match="stopped before it replied"):
            await asker.request("bflow.node.n.ask", Envelope("ask", {}), timeout=10)
        assert time.monotonic() - started < 2.0

    asyncio.run(main())


def test_a_cancelled_caller_leaves_its_delivery_running_and_a_timeout_stops_it():
    ended: list[str] = []

    async def slow(envelope):
        try:
            await asyncio.sleep(envelope.body["seconds"])
        except asyncio.CancelledError:
            ended.append(f"stopped {envelope.body['name']}")
            raise
        ended.append(f"answered {envelope.body['name']}")
        return Envelope("ok", {})

    async def main():
        asker = await _pair(slow)
        caller = asyncio.ensure_future(asker.request("bflow.node.n.ask", Envelope("ask", {"seconds": 0.2, "name": "a"}),
                                                     timeout=10))
        await asyncio.sleep(0.05)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        with pytest.raises(RequestTimeout, match="within 0.1s"):
            await asker.request("bflow.node.n.ask", Envelope("ask", {"seconds": 5, "name": "b"}), timeout=0.1)
        await asyncio.sleep(0.3)
        assert ended == ["stopped b", "answered a"]

    asyncio.run(main())


def test_close_fails_a_request_waiting_for_its_reply():
    async def never(envelope):
        await asyncio.sleep(10)

    async def main():
        asker = await _pair(never)
        waiting = asyncio.ensure_future(asker.request("bflow.node.n.ask", Envelope("ask", {}), timeout=10))
        await asyncio.sleep(0.05)
        await asker.close()
        with pytest.raises(TransportError, match="closed while waiting"):
            await asyncio.wait_for(waiting, 2)

    asyncio.run(main())
