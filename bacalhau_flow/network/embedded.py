"""Opening a network: the embedded one (N compute nodes in this process, on the
memory transport) or an existing one by URL. Every connection signs what it sends.

On a network by URL the requester serves its content store as a gateway for as long as the
network is open, so nodes on other machines can pull the inputs it ships and the content it
holds (network/shipping.py). It listens on and advertises the local address of the connection
to the network, or `$BFLOW_ADVERTISE` (what `bflow run --advertise HOST` sets).
"""

from __future__ import annotations

import contextlib
import os
from typing import AsyncIterator

from ..home import bflow_home, nodes_root, store_root
from ..storage import ContentStore
from ..transports import transport_for
from ..transports.memory import MemoryHub, MemoryTransport
from ..transports.signing import SignedTransport
from .capacity import machine_capacity
from .identity import Identity
from .messages import Capacity
from .node import ComputeNode
from .requester import DISCOVER_SAMPLE, Requester
from .protocol import DISCOVER_SPREAD_SECONDS as DISCOVER_SPREAD

EMBEDDED_NODES = 3


def embedded_node_capacity(nodes: int) -> Capacity:
    """Each embedded node may use every core (they share the machine, as Bacalhau's
    devstack does) and an equal part of the memory and disk."""
    machine = machine_capacity()
    return Capacity(cpu=machine.cpu, memory=machine.memory // nodes, disk=machine.disk // nodes, gpu=0)


async def start_embedded_nodes(hub: MemoryHub, count: int, store: ContentStore | None = None,
                               capacity: Capacity | None = None, **node_options) -> list[ComputeNode]:
    """`count` compute nodes on `hub`, sharing `store` if given.

    Their messages are not signed: the embedded network never leaves this process, so
    there is no one to forge them (ed25519 costs ~5 ms per shard on 2 cores). Every
    network reached by URL (`bflow devstack`, `bflow node`, `--network`) is signed."""
    capacity = capacity or embedded_node_capacity(count)
    nodes = []
    for _ in range(count):
        transport = MemoryTransport(hub=hub)
        node_store = store or ContentStore(nodes_root() / transport.node_id / "store")
        node = ComputeNode(transport, node_store, nodes_root() / "work", capacity, **node_options)
        await node.start()
        nodes.append(node)
    return nodes


def client_identity() -> Identity:
    return Identity.load_or_create(bflow_home() / "client.key")


@contextlib.asynccontextmanager
async def open_network(url: str | None = None, nodes: int = EMBEDDED_NODES) -> AsyncIterator[Requester]:
    """Yield a started Requester. With no url, start `nodes` embedded compute nodes first
    (in this process, sharing its content store, so their outputs need no copying)."""
    started: list[ComputeNode] = []
    store = ContentStore(store_root())
    gateway = None
    if url is None:
        hub = MemoryHub()
        started = await start_embedded_nodes(hub, nodes, store)
        transport = MemoryTransport(hub=hub)
    else:
        transport = SignedTransport(transport_for(url), client_identity())
        await transport.connect()
    requester = Requester(transport, store)
    try:
        if url is not None:
            from ..storage.gateway import gateway_for  # aiohttp: only networks by URL need it

            gateway = gateway_for(store, transport, advertise=os.environ.get("BFLOW_ADVERTISE") or None)
            requester.gateway = await gateway.start()
        await requester.start(expect_nodes=max(1, len(started)), spread=0.0 if url is None else DISCOVER_SPREAD,
                              all_expected=url is None, sample=None if url is None else DISCOVER_SAMPLE)
        yield requester
    finally:
        await requester.stop()
        for node in started:
            await node.stop()
        if gateway is not None:
            await gateway.stop()
        await transport.close()
