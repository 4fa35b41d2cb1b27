"""Opening a network: the embedded one (N compute nodes in this process, on the
memory transport) or an existing one by URL."""

from __future__ import annotations

import contextlib
import uuid
from typing import AsyncIterator

from ..home import nodes_root, store_root
from ..storage import ContentStore
from ..transports import transport_for
from ..transports.memory import MemoryHub, MemoryTransport
from .capacity import machine_capacity
from .messages import Capacity
from .node import ComputeNode
from .requester import Requester

EMBEDDED_NODES = 3


def embedded_node_capacity(nodes: int) -> Capacity:
    """Each embedded node may use every core (they share the machine, as Bacalhau's
    devstack does) and an equal part of the memory."""
    machine = machine_capacity()
    return Capacity(cpu=machine.cpu, memory=machine.memory // nodes, disk=machine.disk // nodes, gpu=0)


@contextlib.asynccontextmanager
async def open_network(url: str | None = None, nodes: int = EMBEDDED_NODES) -> AsyncIterator[Requester]:
    """Yield a started Requester. With no url, start `nodes` embedded compute nodes first."""
    started: list[ComputeNode] = []
    if url is None:
        hub = MemoryHub()
        store = ContentStore(store_root())
        capacity = embedded_node_capacity(nodes)
        for _ in range(nodes):
            node = ComputeNode(MemoryTransport(hub=hub), store, nodes_root() / "embedded", capacity)
            await node.start()
            started.append(node)
        transport = MemoryTransport(hub=hub)
    else:
        transport = transport_for(url)
        await transport.connect()
    requester = Requester(transport, requester_id="r-" + uuid.uuid4().hex[:8])
    try:
        await requester.start(expect_nodes=max(1, len(started)))
        yield requester
    finally:
        await requester.stop()
        for node in started:
            await node.stop()
        await transport.close()
