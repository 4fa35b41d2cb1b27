"""The requester side of the network: knows the nodes, chooses one per shard attempt,
hands the shard over and awaits its result.

Nodes are learned from their announcements. A shard goes to a node that could ever
hold it, has its executor and carries the selector's labels, preferring nodes this
shard has not failed on and then the least loaded. A shard no node could ever hold
fails at once (`NoNodeCanRun`), instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import time

from ..errors import NoNodeCanRun
from ..transports.base import Envelope, NoResponders, RequestTimeout, Transport, TransportError
from .messages import NodeInfo, ShardRequest, ShardResult
from .node import ANNOUNCE, DISCOVER, cancel_subject, run_subject

# How long past a shard's own timeout the requester waits for its result.
RESULT_GRACE_SECONDS = 30.0
NO_TIMEOUT_WAIT_SECONDS = 7 * 24 * 3600.0


class Requester:
    def __init__(self, transport: Transport, *, requester_id: str = "requester"):
        self.transport = transport
        self.id = requester_id
        self.nodes: dict[str, NodeInfo] = {}
        self._in_flight: dict[str, int] = {}  # node id -> shards this requester has there
        self._failures: dict[str, int] = {}  # node id -> attempts that failed there
        self._node_seen = asyncio.Event()
        self._sub = None

    async def start(self, expect_nodes: int = 1, wait: float = 5.0) -> None:
        """Listen for announcements and ask nodes to announce; wait for `expect_nodes` of them."""
        self._sub = await self.transport.subscribe(ANNOUNCE, self._on_announce)
        await self.transport.publish(DISCOVER, Envelope("discover", {}, sender=self.id))
        deadline = time.monotonic() + wait
        while len(self.nodes) < expect_nodes and time.monotonic() < deadline:
            self._node_seen.clear()
            try:
                await asyncio.wait_for(self._node_seen.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _on_announce(self, envelope: Envelope) -> None:
        info = NodeInfo.model_validate(envelope.body)
        self.nodes[info.id] = info
        self._node_seen.set()

    # -- choosing ---------------------------------------------------------------
    def candidates(self, request: ShardRequest, selector: dict[str, str], avoid: set[str]) -> list[str]:
        able = [
            n for n in self.nodes.values()
            if n.total.fits(request.resources)
            and request.transform.executor in n.executors
            and all(n.labels.get(k) == v for k, v in selector.items())
        ]
        if not able:
            raise NoNodeCanRun(_why_none(request, selector, list(self.nodes.values())),
                               hint="lower `resources`, change `selector`, or add a node that fits")

        def rank(n: NodeInfo):
            load = self._in_flight.get(n.id, 0) * request.resources.cpu / max(n.total.cpu, 1e-9)
            return (n.id in avoid, self._failures.get(n.id, 0), load, n.id)

        return [n.id for n in sorted(able, key=rank)]

    # -- dispatching ------------------------------------------------------------
    async def run(self, request: ShardRequest, selector: dict[str, str] | None = None,
                  avoid: set[str] | None = None, on_node=None) -> ShardResult:
        """Run one attempt of a shard on the best node; never raises for a failed shard,
        only `NoNodeCanRun` when no node could ever take it."""
        node = self.candidates(request, selector or {}, avoid or set())[0]
        if on_node:
            on_node(node)
        self._in_flight[node] = self._in_flight.get(node, 0) + 1
        timeout = (request.timeout or NO_TIMEOUT_WAIT_SECONDS) + RESULT_GRACE_SECONDS
        try:
            reply = await self.transport.request(
                run_subject(node), Envelope("shard_request", request.model_dump(), sender=self.id), timeout
            )
            result = ShardResult.model_validate(reply.body)
        except asyncio.CancelledError:
            await self.cancel(node, request)
            raise
        except (NoResponders, RequestTimeout, TransportError) as e:
            self.nodes.pop(node, None) if isinstance(e, NoResponders) else None
            result = ShardResult(
                job_id=request.job_id, shard_index=request.shard_index, shard_id=request.shard_id,
                attempt=request.attempt, node=node, state="failed", retryable=True,
                error=f"lost node {node}: {e}",
            )
        finally:
            self._in_flight[node] -= 1
        if result.state != "completed":
            self._failures[node] = self._failures.get(node, 0) + 1
        return result

    async def cancel(self, node: str, request: ShardRequest) -> None:
        try:
            await self.transport.request(
                cancel_subject(node), Envelope("cancel", {"attempt_id": request.attempt_id}, sender=self.id), 5.0
            )
        except TransportError:
            pass


def _why_none(request: ShardRequest, selector: dict[str, str], nodes: list[NodeInfo]) -> str:
    if not nodes:
        return "no compute node is reachable"
    ask = request.resources
    if not any(n.total.fits(ask) for n in nodes):
        biggest = max(nodes, key=lambda n: (n.total.memory, n.total.cpu))
        return (f"shard {request.shard_index} asks for cpu={ask.cpu:g} memory={ask.memory} disk={ask.disk} "
                f"gpu={ask.gpu}, more than any node has (largest: cpu={biggest.total.cpu:g} "
                f"memory={biggest.total.memory} disk={biggest.total.disk} gpu={biggest.total.gpu})")
    if not any(request.transform.executor in n.executors for n in nodes):
        return f"no node has the {request.transform.executor} executor"
    return f"no node carries the labels {selector}"
