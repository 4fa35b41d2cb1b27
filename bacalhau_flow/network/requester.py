"""The requester side of the network: knows the nodes, asks several for bids, accepts
one, follows the attempt by its heartbeats (a lease), and takes its result and outputs.

A shard goes to a node that could ever hold it, has its executor and carries the selector's
labels, preferring nodes this shard has not failed on, nodes that can start it now, and the
least loaded. A shard that no node could ever hold fails at once (`NoNodeCanRun`) instead of
waiting forever (the choosing and placing: network/placement.py). A node that stops
heartbeating loses its lease: the attempt fails as retryable and Prefect's retry sends the
shard elsewhere. But while the requester itself is cut off from the network, and for a
lease's time after it is back (so the nodes can reconnect too), no lease runs out and no
shard is failed for want of nodes: an outage of the network loses nothing, only a node gone
while it is up does.

On a network reached by URL the requester serves its content store through a gateway of its
own (`gateway`, set by network/embedded.py `open_network`): each shard's local inputs are
shipped as `ipfs://` content (network/shipping.py), and the request names the gateways that
hold its blocks. Outputs and logs come back the same way, pulled over HTTP from the node's
gateway (storage/pull.py); block requests over the transport are only the fallback for a node
without a gateway or one that cannot be reached.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
import uuid
from collections import Counter, OrderedDict

from ..errors import BflowError, ContentError
from ..storage import ContentStore
from ..storage.fetch import fetch_dag
from ..storage.pull import pull
from ..transports.base import Envelope, Transport, TransportError
from . import protocol as p
from .messages import NodeInfo, ShardRequest, ShardResult
from .identity import node_id_for
from .liveness import Beacon
from .placement import PLACING, Placement, Unacknowledged
from .shipping import ship_local_inputs

log = logging.getLogger("bacalhau_flow.requester")

UNCLAIMED_RESULTS = 10_000  # results of attempts not (yet) awaited, kept for `follow` (bflow resume)
MAX_PROVIDERS = 16  # gateways named in one shard request
DISCOVER_GRACE_SECONDS = 1.0  # beyond its spread, for the answers to a discover to arrive
# A job's requester reads this many answers to its discover, then stops listening: a random
# sample, since each node answers at a random moment (10,000 nodes: ~1.2 s of its CPU read all).
# It asks for twice as many when every node it asked would queue a shard (`want_more_nodes`),
# and hears them all before it says that no node can run a shard.
DISCOVER_SAMPLE = 256


class Requester(Placement):
    def __init__(self, transport: Transport, store: ContentStore, *, requester_id: str | None = None,
                 lease_seconds: float = p.LEASE_SECONDS):
        self.transport = transport
        self.store = store
        self.id = requester_id or getattr(transport, "node_id", None) or "r-" + uuid.uuid4().hex[:12]
        self.lease_seconds = lease_seconds
        self.gateway: str | None = None  # URL of this requester's own gateway (URL networks only)
        self.nodes: dict[str, NodeInfo] = {}
        self._live: set[str] = set()  # ids of the nodes not dropped: the others are gone (protocol.py)
        self._missed: Counter[str] = Counter()  # node id -> bids in a row it left unanswered
        self._missed_at: dict[str, float] = {}  # node id -> when its last counted miss was seen
        self._in_flight: dict[str, float] = {}  # node id -> cpu this requester has placed there
        self._failures: dict[str, int] = {}  # node id -> attempts that failed there
        self._waiting: dict[str, tuple[asyncio.Future, list[float]]] = {}  # attempt id -> (result, [lease end])
        self._accepted: dict[str, str] = {}  # attempt id -> the node given it: the only one heard about it
        # attempt id -> nodes whose accept went unanswered and was withdrawn (a cancel sent after
        # it): what they report is acknowledged, so they stop offering it, and never used
        self._withdrawn: dict[str, set[str]] = {}
        self.dropped: Counter[str] = Counter()  # job id -> reports dropped for coming from another node
        self._roster = 0  # changes when a node joins or changes what it offers
        self._able_roster = -1
        self._able_cache: dict[tuple, list[str]] = {}  # kind of shard -> ids of nodes that could run it
        self._node_seen = asyncio.Event()
        self._answers_until = 0.0  # until then the answers to its discover may still come
        self._discovered = -math.inf  # monotonic time of its last discover
        self._discovered_up = 0.0  # the transport's `up_since()` then: it changes on a reconnection
        self.sample: int | None = None  # answers read of a discover (DISCOVER_SAMPLE); None: all
        self._info = None  # the subscription its discovers are answered on, while it listens
        self._answers_left: int | None = None  # answers still read of the last discover; None: all
        # set when it has read its sample of the last discover's answers and stopped listening,
        # perhaps before every node answered
        self._sampled = asyncio.Event()
        self._placing = asyncio.Semaphore(PLACING)
        self._subs: list = []
        # Liveness (network/liveness.py): the jobs it drives, named to their nodes every few
        # seconds; results offered for attempts it does not await (yet), for `follow`
        self._serving: set[str] = set()
        self._beacon = Beacon(transport, self.id, self.driven_jobs)
        self._unclaimed: OrderedDict[str, tuple[str, ShardResult]] = OrderedDict()

    # -- lifecycle --------------------------------------------------------------
    async def start(self, expect_nodes: int = 1, wait: float = 5.0, spread: float = p.DISCOVER_SPREAD_SECONDS,
                    all_expected: bool = False, sample: int | None = None) -> None:
        """Listen for announcements and ask every node to answer within `spread` s; wait up
        to `wait` s for `expect_nodes`. With `all_expected`, those are every node there is (the
        embedded network's): once they answered, no other answer is waited for. With `sample`,
        it reads that many answers of each discover (`discover`)."""
        t = self.transport
        self.sample = sample
        self._subs = [
            await t.subscribe(p.ANNOUNCE, self._on_announce),
            await t.subscribe(p.requester_subject(self.id, "progress"), self._on_progress),
            await t.subscribe(p.requester_subject(self.id, "result"), self._on_result),
        ]
        self._beacon.start()
        await self.discover(spread)
        deadline = time.monotonic() + wait
        while len(self.live_nodes()) < expect_nodes and time.monotonic() < deadline:
            self._node_seen.clear()
            try:
                await asyncio.wait_for(self._node_seen.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        if all_expected and len(self.live_nodes()) >= expect_nodes:
            self._answers_until = time.monotonic()

    async def discover(self, spread: float = p.DISCOVER_SPREAD_SECONDS, *, whole: bool = False) -> None:
        """Ask every node for its NodeInfo, answered on this requester's own subject. Unless
        `whole`, only the first `self.sample` answers are read: then it stops listening, and the
        server no longer sends it the others."""
        self._answers_left = None if whole else self.sample
        self._sampled.clear()
        self._discovered, self._discovered_up = time.monotonic(), self.transport.up_since()
        self._answers_until = self._discovered + spread + DISCOVER_GRACE_SECONDS
        if self._info is None:
            self._info = await self.transport.subscribe(p.requester_subject(self.id, "info"), self._on_info)
        body = {"reply": p.requester_subject(self.id, "info"), "spread": spread}
        await self.transport.publish(p.DISCOVER, Envelope("discover", body, sender=self.id))

    async def discover_again(self, reason: str, *, whole: bool = False) -> bool:
        """Discover again unless it did less than REDISCOVER_SECONDS ago (however recently,
        with `whole`: hearing every node); whether it asked."""
        if not whole and time.monotonic() - self._discovered < p.REDISCOVER_SECONDS:
            return False
        log.info("asking the nodes again: %s", reason)
        try:
            await self.discover(whole=whole)
        except TransportError as e:  # the network is away: asked again when it is back
            log.info("discover failed: %s", e)
            return False
        return True

    async def want_more_nodes(self) -> None:
        """Every node it asked would queue a shard: if it knows only a sample of the network,
        read twice as many answers of a discover (at most every REDISCOVER_SECONDS)."""
        if self._sampled.is_set() and self.sample and time.monotonic() - self._discovered >= p.REDISCOVER_SECONDS:
            self.sample *= 2
            await self.discover_again(f"every node asked would queue a shard: reading {self.sample} answers")

    async def wait_for_answers(self, at_most: float) -> None:
        """Sleep until no other answer to its discover may come (its sample is full, or the
        spread and grace are past), `at_most` s; 0.05 s at least."""
        left = min(at_most, self._answers_until - time.monotonic())
        if left <= 0.05:
            await asyncio.sleep(0.05)
            return
        try:
            await asyncio.wait_for(self._sampled.wait(), left)
        except asyncio.TimeoutError:
            pass

    async def _on_info(self, envelope: Envelope) -> None:
        """An answer to its discover; the last one of its sample ends its listening."""
        if self._answers_left is not None:
            if self._answers_left <= 0:
                return
            self._answers_left -= 1
            if self._answers_left == 0:
                self._answers_until = time.monotonic()  # no other answer will come
                self._sampled.set()
                info, self._info = self._info, None
                if info is not None:
                    await info.unsubscribe()  # what is in flight already is not even verified
        await self._on_announce(envelope)

    async def stop(self) -> None:
        await self._beacon.stop()
        if self._info is not None:
            self._subs.append(self._info)
            self._info = None
        for sub in self._subs:
            await sub.unsubscribe()

    def serve_job(self, job_id: str, serving: bool = True) -> None:
        """Name job `job_id` to the nodes as driven by this requester (or no longer)."""
        (self._serving.add if serving else self._serving.discard)(job_id)

    def driven_jobs(self) -> set[str]:
        """The jobs its beacon names: those it serves, and those of the attempts it awaits."""
        return self._serving | {attempt.split("/", 1)[0] for attempt in self._waiting}

    def live_nodes(self) -> list[NodeInfo]:
        return [n for n in self.nodes.values() if n.id in self._live]

    # -- handlers ---------------------------------------------------------------
    @p.handles("node_info")
    async def _on_announce(self, envelope: Envelope) -> None:
        info = NodeInfo.model_validate(envelope.body)
        if info.public_key and node_id_for(info.public_key) != info.id:
            info = info.model_copy(update={"public_key": None})  # not its key: nothing is sealed to it
        known = self.nodes.get(info.id)
        if known is None or (known.executors, known.labels, known.total) != (info.executors, info.labels, info.total):
            self._roster += 1  # what could run where has changed
        self.nodes[info.id] = info
        self._live.add(info.id)
        self._heard_from(info.id)
        self._node_seen.set()

    @p.handles("progress")
    async def _on_progress(self, envelope: Envelope) -> None:
        progress = p.Progress.model_validate(envelope.body)
        if progress.attempt_id not in self._accepted:  # not (yet) followed (`follow`): nothing to renew
            return
        if not self._from_accepted(progress.attempt_id, envelope.sender, "progress"):
            return
        waiting = self._waiting.get(progress.attempt_id)
        if waiting:
            waiting[1][0] = time.monotonic() + self.lease_seconds

    @p.handles("shard_result")
    async def _on_result(self, envelope: Envelope) -> Envelope | None:
        result = ShardResult.model_validate(envelope.body)
        attempt_id = f"{result.job_id}/{result.shard_index}/{result.attempt}"
        waiting = self._waiting.get(attempt_id)
        withdrawn = envelope.sender in self._withdrawn.get(attempt_id, ())
        if waiting is None or withdrawn:  # late, repeated or withdrawn: not used; acked so the node stops
            if waiting is None and not withdrawn:  # kept a while: a resumed requester may `follow` it
                self._unclaimed[attempt_id] = (envelope.sender, result)
                while len(self._unclaimed) > UNCLAIMED_RESULTS:
                    self._unclaimed.popitem(last=False)
            return Envelope("ack", {"attempt_id": attempt_id}, sender=self.id)
        if not self._from_accepted(attempt_id, envelope.sender, "a result"):
            return None  # no answer: a forger learns nothing
        if not waiting[0].done():
            waiting[0].set_result(result.model_copy(update={"node": envelope.sender}))
        return Envelope("ack", {"attempt_id": attempt_id}, sender=self.id)

    def _from_accepted(self, attempt_id: str, sender: str, what: str) -> bool:
        """Whether `sender` is the node this requester accepted for the attempt; anything
        else is dropped and counted against the attempt's job (`bflow describe` shows it)."""
        if self._accepted.get(attempt_id) == sender:
            return True
        if sender in self._withdrawn.get(attempt_id, ()):
            return False  # a node told to drop the attempt, reporting before the cancel reached it
        self._drop(attempt_id.split("/", 1)[0], f"{what} for attempt {attempt_id} from {sender}, "
                                                f"not from the node it was given to")
        return False

    def _drop(self, job_id: str | None, what: str) -> None:
        self.dropped[job_id or ""] += 1
        log.warning("dropped %s", what)

    # -- running ----------------------------------------------------------------
    async def run(self, request: ShardRequest, selector: dict[str, str] | None = None,
                  avoid: set[str] | None = None, on_node=None, secrets: dict[str, str] | None = None) -> ShardResult:
        """Run one attempt of a shard on the best node. Never raises for a failed attempt
        (it becomes a failed ShardResult); raises NoNodeCanRun when no node ever could."""
        if self.gateway:
            try:
                request = await self._for_other_machines(request)
            except BflowError as e:
                return self._not_sent(request, e)
        result_future: asyncio.Future = asyncio.get_running_loop().create_future()
        lease = [time.monotonic() + self.lease_seconds]
        self._waiting[request.attempt_id] = (result_future, lease)
        node = None
        try:
            try:
                node = await self.place(request, selector or {}, avoid or set(), secrets)
            except Unacknowledged as e:  # the next attempt (a new attempt id) may go to those nodes
                return self._not_sent(request, e)
            if on_node:
                on_node(node)
            lease[0] = time.monotonic() + self.lease_seconds
            result = await self._collect(await self._await_result(result_future, lease, node, request))
        except asyncio.CancelledError:
            if node:
                await self.cancel(node, request)
            raise
        finally:
            self._waiting.pop(request.attempt_id, None)
            self._accepted.pop(request.attempt_id, None)
            self._withdrawn.pop(request.attempt_id, None)
            if node:
                self._in_flight[node] -= request.resources.cpu
        if result.state != "completed":
            self._failures[result.node] = self._failures.get(result.node, 0) + 1
        return result

    async def follow(self, request: ShardRequest, node: str) -> ShardResult | None:
        """Take over an attempt that an earlier process of this requester id placed on `node`
        (`bflow resume`): its result, when the node offered it already or offers it while its
        heartbeats keep the lease; None when the node is not heard about it for a lease (it
        lost the attempt, or gave up offering its result): then it must run again. Only `node`
        is heard about it, as for any attempt."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        lease = [time.monotonic() + self.lease_seconds]
        self._waiting[request.attempt_id] = (future, lease)
        self._accepted[request.attempt_id] = node
        offered = self._unclaimed.pop(request.attempt_id, None)
        if offered is not None and offered[0] == node:
            future.set_result(offered[1].model_copy(update={"node": node}))
        try:
            while not future.done():
                remaining = lease[0] - time.monotonic()
                if remaining <= 0 and self.cut_off():
                    lease[0] = time.monotonic() + self.lease_seconds
                elif remaining <= 0:
                    await self.cancel(node, request)  # in case it still runs: never two runs at once
                    return None
                else:
                    await asyncio.wait([future], timeout=remaining)
            result = await self._collect(future.result())
        except asyncio.CancelledError:
            await self.cancel(node, request)
            raise
        finally:
            self._waiting.pop(request.attempt_id, None)
            self._accepted.pop(request.attempt_id, None)
        return result

    async def _for_other_machines(self, request: ShardRequest) -> ShardRequest:
        """The request as nodes that cannot see this disk need it: local inputs shipped as
        ipfs:// content, and the gateways that hold the blocks (this one first)."""
        shipped = await asyncio.to_thread(ship_local_inputs, request, self.store)
        return shipped.model_copy(update={"providers": self._providers(shipped)})

    def _providers(self, request: ShardRequest) -> list[str]:
        """Where a node finds the shard's ipfs:// blocks: this requester's gateway, which holds
        what it shipped and the outputs it collected; only for content not held here (an ipfs://
        CID another requester's job made) also the nodes' gateways, at most MAX_PROVIDERS, so
        that a request does not grow with the network."""
        if all(self.store.has(root) for root in request.ipfs_roots()):
            return [self.gateway]
        others = sorted({n.gateway for n in self.live_nodes() if n.gateway} - {self.gateway})
        return [self.gateway] + others[:MAX_PROVIDERS - 1]

    def _not_sent(self, request: ShardRequest, error: BflowError) -> ShardResult:
        """A failed attempt for a shard that could not be sent (its inputs cannot be read)."""
        now = time.time()
        return ShardResult(job_id=request.job_id, shard_index=request.shard_index, shard_id=request.shard_id,
                           attempt=request.attempt, node=self.id, state="failed", retryable=error.retryable,
                           error=str(error), started=now, ended=now,
                           stderr_cid=self.store.put_bytes(f"bflow: {error}\n".encode()),
                           stdout_cid=self.store.put_bytes(b""))

    async def _await_result(self, future: asyncio.Future, lease: list[float], node: str,
                            request: ShardRequest) -> ShardResult:
        """The attempt's result, or a failed one when its node stops renewing the lease."""
        while True:
            remaining = lease[0] - time.monotonic()
            if remaining <= 0 and self.cut_off():
                lease[0] = time.monotonic() + self.lease_seconds  # we cannot hear it: no fault of the node
                continue
            if remaining <= 0:
                self._live.discard(node)  # not live until it announces again
                await self.cancel(node, request)  # in case it is only slow: never two runs at once
                return ShardResult(job_id=request.job_id, shard_index=request.shard_index,
                                   shard_id=request.shard_id, attempt=request.attempt,
                                   node=node, state="failed", retryable=True,
                                   error=f"lost node {node}: no heartbeat for {self.lease_seconds:g}s")
            try:
                return await asyncio.wait_for(asyncio.shield(future), remaining)
            except asyncio.TimeoutError:
                continue

    async def _collect(self, result: ShardResult) -> ShardResult:
        """Copy the attempt's outputs and logs from its node, verified by CID, also when
        the attempt failed (its logs are what the user needs then): over HTTP from the node's
        gateway, all three at once, or block by block over the transport when that fails."""
        async def get_blocks(cids: list[str]) -> dict[str, bytes]:
            reply = await self.transport.request(p.node_subject(result.node, "blocks"),
                                                 Envelope("blocks", {"cids": cids}, sender=self.id), p.BLOCKS_TIMEOUT)
            if reply.sender != result.node:
                self._drop(result.job_id, f"blocks for node {result.node} from {reply.sender}")
                raise ContentError(f"blocks came from {reply.sender}, not from node {result.node}")
            return {c: base64.b64decode(b) for c, b in reply.body["blocks"].items()}

        async def fetch(cid: str) -> None:
            if gateway:
                try:
                    await asyncio.to_thread(pull, self.store, cid, [gateway])
                    return
                except ContentError as e:
                    log.info("pulling %s from %s failed, asking over the network: %s", cid, gateway, e)
            await fetch_dag(self.store, cid, get_blocks)

        info = self.nodes.get(result.node)
        gateway = info.gateway if info else None
        try:
            await asyncio.gather(*(fetch(c) for c in (result.outputs_cid, result.stdout_cid, result.stderr_cid) if c))
        except (ContentError, TransportError) as e:
            lost = f"outputs of node {result.node} could not be fetched: {e}"
            error = lost if result.state == "completed" else f"{result.error}; {lost}"
            # Only CIDs that are here may be recorded: the job's results are read from this store.
            present = {k: (c if c and self.store.has(c) else None)
                       for k, c in (("outputs_cid", result.outputs_cid), ("stdout_cid", result.stdout_cid),
                                    ("stderr_cid", result.stderr_cid))}
            return result.model_copy(update={"state": "failed", "retryable": True, "error": error, **present})
        return result

    async def cancel(self, node: str, request: ShardRequest) -> None:
        try:
            await self.transport.request(p.node_subject(node, "cancel"),
                                         Envelope("cancel", {"attempt_id": request.attempt_id}, sender=self.id), 5.0)
        except TransportError:
            pass
