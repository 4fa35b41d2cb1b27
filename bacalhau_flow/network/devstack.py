"""A local network of compute nodes running on a background event loop.

Used by `bflow devstack`, `bflow node` and the tests: N nodes, each with its own key,
content store and work folder, on any transport URL (`memory://NAME` inside one
process, `nats://host:port` across processes).

Each node serves its content store as an IPFS trustless gateway beside it (storage/gateway.py),
on `gateway_port` (0: any free port, the default; N: node i gets port N+i; None: no gateway);
its URL is in `gateways`, on the node (`node.gateway`) and in the NodeInfo it announces.
By default a gateway listens on and advertises the local address of the node's connection to
the network (storage/gateway.py `gateway_for`); `advertise` names another host, announced as
the node's `address`.

`shared=True` is for thousands of nodes in one process (`bflow devstack --processes`): the
nodes share one connection to the network (transports/shared.py) and one gateway serving
each node's store under `/n/<node id>/`; each keeps its own key, store, work folder and
capacity.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

from ..home import nodes_root
from ..storage import ContentStore
from ..storage.gateway import Gateway, gateway_for
from ..transports import transport_for
from ..transports.shared import FanOut, SharedConnection
from ..transports.signing import SignedTransport
from .embedded import embedded_node_capacity
from . import protocol as p
from .identity import Identity
from .messages import Capacity
from .node import ComputeNode


START_BATCH = 50  # nodes started at once


class Devstack:
    def __init__(self, url: str, nodes: int = 3, *, capacity: Capacity | None = None,
                 labels: list[dict[str, str]] | None = None, root: Path | None = None,
                 keys: list[Path] | None = None, gateway_port: int | None = 0, gateway_host: str | None = None,
                 advertise: str | None = None, keep: bool = True, shared: bool = False, **node_options):
        self.url = url
        self.count = nodes
        self.capacity = capacity or embedded_node_capacity(nodes)
        self.labels = labels or [{} for _ in range(nodes)]
        self.root = Path(root or nodes_root())
        self.keys = keys
        self.node_options = node_options
        self.gateway_port = gateway_port
        self.gateway_host = gateway_host  # None: the address of the connection to the network
        self.advertise = advertise  # None: the gateway's own address (that connection's, for 0.0.0.0)
        self.keep = keep  # False: remove each node's folder (store, work) when the devstack stops
        self.shared = shared  # one connection and one gateway for all its nodes
        self._connection = None  # the shared connection, when shared
        self._fan_out: FanOut | None = None  # its subjects every node subscribes to, subscribed once
        self._shared_gateway: Gateway | None = None
        self.nodes: list[ComputeNode] = []
        self._gateways: dict[str, Gateway] = {}  # node id -> its gateway
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bflow-devstack", daemon=True)

    def __enter__(self) -> "Devstack":
        self._thread.start()
        try:
            self.call(self._start())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.loop.is_running():
            self.call(self._stop(), timeout=30 + self.count / 50)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    def call(self, coro, timeout: float | None = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        if self.shared:
            self._connection = transport_for(self.url)
            await self._connection.connect()
            self._fan_out = FanOut(self._connection, _published_to_all)
            if self.gateway_port is not None:
                self._shared_gateway = gateway_for(None, self._connection, self.gateway_host, self.gateway_port,
                                                   self.advertise, stores={})
                await self._shared_gateway.start()
        for first in range(0, self.count, START_BATCH):  # a batch at a time: their subscriptions overlap
            batch = await asyncio.gather(*(self._start_node(i) for i in range(first, min(first + START_BATCH,
                                                                                           self.count))))
            self.nodes.extend(batch)

    async def _start_node(self, i: int) -> ComputeNode:
        identity = Identity.load_or_create(self.keys[i]) if self.keys else Identity.generate()
        inner = (SharedConnection(self._connection, self._fan_out) if self._connection is not None
                 else transport_for(self.url))
        transport = SignedTransport(inner, identity)
        await transport.connect()
        home = self.root / identity.node_id
        home.mkdir(parents=True, exist_ok=True)
        node = ComputeNode(transport, ContentStore(home / "store"), home / "work", self.capacity,
                           labels=self.labels[i % len(self.labels)], attempts_file=home / "accepted-attempts",
                           **self.node_options)
        if self._shared_gateway is not None:
            self._shared_gateway.stores[node.id] = node.store
            node.gateway = self._shared_gateway.url_for(node.id)
        elif self.gateway_port is not None:  # before start(), so the first announcement has its URL
            gateway = gateway_for(node.store, transport, self.gateway_host,
                                  self.gateway_port + i if self.gateway_port else 0, self.advertise)
            node.gateway = await gateway.start()
            self._gateways[node.id] = gateway
        node.address = urlsplit(node.gateway).hostname if node.gateway else (
            self.advertise or transport.local_host())
        await node.start()
        return node

    async def _stop(self) -> None:
        for node in self.nodes:
            await self._stop_node(node)
            if not self.keep:  # its results are in the requesters' stores; its own copy is a cache
                await asyncio.to_thread(shutil.rmtree, self.root / node.id, True)
        if self._shared_gateway is not None:
            await self._shared_gateway.stop()
        if self._connection is not None:
            await self._connection.close()

    async def _stop_node(self, node: ComputeNode) -> None:
        await node.stop()
        await node.transport.close()
        gateway = self._gateways.pop(node.id, None)
        if gateway is not None:
            await gateway.stop()
        if self._shared_gateway is not None:
            self._shared_gateway.stores.pop(node.id, None)

    @property
    def gateways(self) -> list[str]:
        """The gateway URL of each node, in node order (empty without gateways)."""
        return [node.gateway for node in self.nodes if node.gateway]

    def kill(self, index: int) -> ComputeNode:
        """Take a node off the network at once, as if its process died: no goodbye, its
        running commands killed, its results never delivered."""
        node = self.nodes[index]
        self.call(self._stop_node(node))
        return node


def _published_to_all(subject: str) -> bool:
    """The subjects the nodes of a process all listen on, never requested: a discover, and
    the beacons of the requesters whose shards they run (network/liveness.py)."""
    return subject == p.DISCOVER or (subject.startswith("bflow.requester.") and subject.endswith(".alive"))
