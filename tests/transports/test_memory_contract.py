"""The transport contract, run against the in-process memory transport (one MemoryHub per test)."""

import pytest

from bacalhau_flow.testing.transport_contract import TransportContract
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
