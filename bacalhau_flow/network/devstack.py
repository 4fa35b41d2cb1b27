"""A local network of compute nodes running on a background event loop.

Used by `bflow devstack`, `bflow node` and the tests: N nodes, each with its own key,
content store and work folder, on any transport URL (`memory://NAME` inside one
process, `nats://host:port` across processes).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from ..home import nodes_root
from ..storage import ContentStore
from ..transports import transport_for
from ..transports.signing import SignedTransport
from .embedded import embedded_node_capacity
from .identity import Identity
from .messages import Capacity
from .node import ComputeNode


class Devstack:
    def __init__(self, url: str, nodes: int = 3, *, capacity: Capacity | None = None,
                 labels: list[dict[str, str]] | None = None, root: Path | None = None,
                 keys: list[Path] | None = None, **node_options):
        self.url = url
        self.count = nodes
        self.capacity = capacity or embedded_node_capacity(nodes)
        self.labels = labels or [{} for _ in range(nodes)]
        self.root = Path(root or nodes_root())
        self.keys = keys
        self.node_options = node_options
        self.nodes: list[ComputeNode] = []
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
            self.call(self._stop(), timeout=30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    def call(self, coro, timeout: float | None = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        for i in range(self.count):
            identity = Identity.load_or_create(self.keys[i]) if self.keys else Identity.generate()
            transport = SignedTransport(transport_for(self.url), identity)
            await transport.connect()
            node = ComputeNode(transport, ContentStore(self.root / identity.node_id / "store"),
                               self.root / identity.node_id / "work", self.capacity,
                               labels=self.labels[i % len(self.labels)], **self.node_options)
            await node.start()
            self.nodes.append(node)

    async def _stop(self) -> None:
        for node in self.nodes:
            await self._stop_node(node)

    async def _stop_node(self, node: ComputeNode) -> None:
        await node.stop()
        await node.transport.close()

    def kill(self, index: int) -> ComputeNode:
        """Take a node off the network at once, as if its process died: no goodbye, its
        running commands killed, its results never delivered."""
        node = self.nodes[index]
        self.call(self._stop_node(node))
        return node
