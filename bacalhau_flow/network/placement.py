"""How a requester chooses a node for a shard and has it accept the shard (the base of
network/requester.py's `Requester`, whose state it reads: `nodes`, `_live`, `_in_flight`,
`_failures`, `_missed`, `_missed_at`, `_withdrawn`, `_accepted`, `_discovered_up`, `_sampled`,
and whose `live_nodes`, `discover_again`, `want_more_nodes`, `wait_for_answers`, `_drop` and
`cancel` it calls).

The nodes that could ever run a shard (executor, selector's labels, total capacity) are kept
per kind of shard; of those a bounded random sample is ranked (not failed on by this shard,
fewest failures, most free cpu after what this requester placed there), the best BIDDERS are
asked for a bid, and the bids are tried in order of ready, queued, load. An accept left
unanswered is withdrawn by a cancel, so one attempt never runs on two nodes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time

from ..errors import BflowError, NoNodeCanRun
from ..transports.base import Envelope, NoResponders, TransportError
from . import protocol as p
from .messages import NodeInfo, ShardRequest
from .secrets import seal

log = logging.getLogger("bacalhau_flow.requester")

BIDDERS = 3  # nodes asked for a bid per attempt
NO_BID_RETRY_SECONDS = 0.5
SAMPLE = 64  # nodes ranked for one placement on a large network
# Placements in flight at once, so that one's round trips to its bidders overlap another's
# (1,000 trivial shards on a 3-node NATS devstack: 25.2-26.5 s, one at a time 27.6-29.1 s).
# Each counts its node's cpu in `_in_flight` before its accept goes out, so that the others
# see that load when they choose.
PLACING = 8


class Placement:
    """Choosing a node and placing a shard on it; `Requester` is the rest."""

    # -- choosing ---------------------------------------------------------------
    def candidates(self, request: ShardRequest, selector: dict[str, str], avoid: set[str]) -> list[str]:
        """Node ids that could run the shard, best first. Raises NoNodeCanRun if none could ever.

        On a network of more than SAMPLE such nodes, a random SAMPLE of them is ranked: the cost
        of a placement stays flat however large the network (the bids say who is free now)."""
        able = self._able(request, selector)
        pick = random.sample(able, SAMPLE) if len(able) > SAMPLE else able
        live = [self.nodes[i] for i in pick if i in self._live]
        if not live and len(pick) < len(able):  # the sample found only gone nodes: look at them all
            live = [self.nodes[i] for i in able if i in self._live]
        if not live:
            nodes = self.live_nodes()
            why = _why_none(request, selector, nodes)
            offered_nowhere = any(request.transform.executor in n.unavailable for n in nodes)
            raise NoNodeCanRun(why, hint="make the executor available on a node (for docker: start its engine)"
                               if offered_nowhere else "lower `resources`, change `selector`, or add a node that fits")

        def rank(n: NodeInfo):
            free = (n.free.cpu - self._in_flight.get(n.id, 0.0)) / max(n.total.cpu, 1e-9)
            return (n.id in avoid, self._failures.get(n.id, 0), -free, n.id)

        return [n.id for n in sorted(live, key=rank)]

    def _able(self, request: ShardRequest, selector: dict[str, str]) -> list[str]:
        """Ids of the nodes (live or not) that could ever run shards like this one; kept per
        kind of shard until a node joins or changes what it offers."""
        r = request.resources
        key = (request.transform.executor, tuple(sorted(selector.items())), r.cpu, r.memory, r.disk, r.gpu)
        if self._able_roster != self._roster:
            self._able_cache, self._able_roster = {}, self._roster
        if key not in self._able_cache:
            self._able_cache[key] = [n.id for n in self.nodes.values() if n.total.fits(r)
                                     and request.transform.executor in n.executors
                                     and all(n.labels.get(k) == v for k, v in selector.items())]
        return self._able_cache[key]

    def _heard_from(self, node: str) -> None:
        """`node` answered or announced itself: its unanswered bids start again from none."""
        self._missed.pop(node, None)
        self._missed_at.pop(node, None)

    async def _bid(self, node: str, body: dict) -> p.Bid | None:
        asked = time.monotonic()
        try:
            reply = await self.transport.request(p.node_subject(node, "bid"), Envelope("bid_request", body,
                                                                                      sender=self.id), p.BID_TIMEOUT)
            if reply.sender != node:  # someone else answering on the node's subject
                self._drop(None, f"a bid for node {node} from {reply.sender}")
                return None
            self._heard_from(node)
            return p.Bid.model_validate(reply.body).model_copy(update={"node": node})
        except NoResponders as e:  # nobody serves its subject: gone until it announces again
            log.info("no bid from %s: %s", node, e)
            if not self.cut_off():
                self._live.discard(node)
            return None
        except TransportError as e:  # no answer in time: gone after BID_MISSES in a row
            log.info("no bid from %s: %s", node, e)
            # Bids asked side by side (PLACING) that time out together are one silence, not
            # several in a row: one stall of this process's loop must not drop a node
            if not self.cut_off() and asked >= self._missed_at.get(node, -math.inf):
                self._missed_at[node] = time.monotonic()
                self._missed[node] += 1
                if self._missed[node] >= p.BID_MISSES:
                    self._live.discard(node)
            return None

    async def place(self, request: ShardRequest, selector: dict[str, str], avoid: set[str],
                    secrets: dict[str, str] | None = None) -> str:
        """Ask the best nodes for bids and have one accept the shard; return its id (its
        cpu counted in `_in_flight` from its accept until the attempt ends). Raises NoNodeCanRun when
        every node says it never could."""
        async with self._placing:
            return await self._place(request, selector, avoid, secrets or {})

    def cut_off(self) -> bool:
        """The connection to the network is down, or came back less than a lease ago."""
        return time.monotonic() - self.transport.up_since() < self.lease_seconds

    async def _place(self, request: ShardRequest, selector: dict[str, str], avoid: set[str],
                     secrets: dict[str, str]) -> str:
        never: dict[str, str] = {}  # node -> why it said it never could (too small, not trusted, ...)
        # One dump for every bidder; the datums as they are (JSON already, never changed: JobRun.request),
        # not copied by pydantic: a shard of 100 datums is 100 dicts and 100 lists a dump. A bid
        # is decided by the transform, resources and requester alone (ComputeNode.bid): the bid
        # request leaves the datums out, so only the accept carries them, to one node.
        fields = request.model_dump(exclude={"datums"})
        body = {"request": {**fields, "datums": request.datums}, "selector": selector}
        bid_body = {"request": {**fields, "datums": []}, "selector": selector}
        while True:
            up = self.transport.up_since()
            if up == math.inf:  # what is sent now may arrive much later
                await asyncio.sleep(NO_BID_RETRY_SECONDS)
                continue
            if up != self._discovered_up:  # back from an outage: announcements may have been missed
                await self.discover_again("the connection to the network came back")
            try:
                withdrawn = self._withdrawn.get(request.attempt_id, set())
                ranked = [n for n in self.candidates(request, selector, avoid)
                          if n not in never and n not in withdrawn]
            except NoNodeCanRun:
                # Not yet when the nodes are out of earshot (not gone), or while the answers to
                # the discover may still come (the node that fits may be a leaf network away),
                # or when nodes it dropped may be back: then it asks them all again
                waiting = self.cut_off() or time.monotonic() < self._answers_until
                if not waiting and self._sampled.is_set():  # it heard only a sample: the one that fits may be elsewhere
                    waiting = await self.discover_again("no node of its sample could run a shard", whole=True)
                if not waiting and len(self._live) < len(self.nodes):
                    waiting = await self.discover_again("no node left for a shard")
                if not waiting:
                    raise
                await self.wait_for_answers(NO_BID_RETRY_SECONDS)
                continue
            if not ranked and withdrawn:
                raise Unacknowledged(f"no node acknowledged the shard (withdrawn from {', '.join(sorted(withdrawn))})")
            if not ranked:
                raise NoNodeCanRun("; ".join(sorted(set(never.values()))))
            asked = ranked[:BIDDERS]
            bids = [b for b in await asyncio.gather(*(self._bid(n, bid_body) for n in asked)) if b]
            never.update((b.node, b.reason or f"node {b.node} never could") for b in bids if b.never)
            cpu = request.resources.cpu
            room = {b.node for b in bids if b.accepted and self._has_room(b, cpu)}
            if not room:  # all full: when it knows only a sample of the nodes, it asks for more
                await self.want_more_nodes()
            if not room and any(b.accepted for b in bids) and time.monotonic() < self._answers_until:
                # Every node it asked would queue the shard, while answers to its discover may
                # still come: a node with room may be among them. Choose again once they came.
                await self.wait_for_answers(math.inf)
                continue
            order = {n: i for i, n in enumerate(asked)}
            # ranked when each is tried: placements running beside this one may have taken a node since
            for bid in sorted((b for b in bids if b.accepted),
                              key=lambda b: (b.node not in room, b.queued, self._in_flight.get(b.node, 0.0),
                                             order[b.node])):
                self._accepted[request.attempt_id] = bid.node  # before the accept: a fast result may beat its ack
                self._in_flight[bid.node] = self._in_flight.get(bid.node, 0.0) + cpu
                try:
                    if await self._accept(bid.node, self._with_secrets(body, bid.node, secrets), request):
                        return bid.node
                except asyncio.CancelledError:
                    # Stopped (a Ctrl-C) before the node answered: it may have taken the attempt
                    # already, so it is told to drop it, as run() does with a placed one
                    self._in_flight[bid.node] -= cpu
                    self._accepted.pop(request.attempt_id, None)
                    await self.cancel(bid.node, request)
                    raise
                self._in_flight[bid.node] -= cpu
                self._accepted.pop(request.attempt_id, None)
            if any(not b.never for b in bids) or not bids:
                await asyncio.sleep(NO_BID_RETRY_SECONDS)  # busy or no answer: nodes may be restarting

    def _has_room(self, bid: p.Bid, cpu: float) -> bool:
        """The bid says the shard fits now, and what this requester placed there since (its
        placements run side by side: a node bids ready to each before any accept arrives)
        leaves room for it too."""
        info = self.nodes.get(bid.node)
        return bid.ready and (info is None or self._in_flight.get(bid.node, 0.0) + cpu <= info.total.cpu + 1e-9)

    def _with_secrets(self, body: dict, node: str, secrets: dict[str, str]) -> dict:
        """The accept for `node`, carrying the shard's secrets sealed to that node's key (in the
        clear only on the embedded network, whose messages never leave this process)."""
        if not secrets:
            return body
        info = self.nodes.get(node)
        if info is not None and info.public_key:
            return dict(body, secrets=seal(secrets, info.public_key))
        if getattr(self.transport, "identity", None) is None:
            return dict(body, secrets_plain=secrets)
        raise NoNodeCanRun(f"node {node} announces no key to seal the shard's secrets to",
                           hint="upgrade bflow on that node")

    async def _accept(self, node: str, body: dict, request: ShardRequest) -> bool:
        """Whether `node` took the attempt. An accept left unanswered may still reach the node
        (its answer lost, or the accept buffered through an outage and delivered later). While
        the network is away it is asked again (a node answers a repeated accept as it did the
        first); a node that does not answer on a network that is up has the accept withdrawn
        by a cancel sent after it, so that one attempt never runs on two nodes."""
        envelope = Envelope("accept", body, sender=self.id)
        while True:
            try:
                reply = await self.transport.request(p.node_subject(node, "accept"), envelope, p.ACCEPT_TIMEOUT)
                break
            except TransportError as e:
                if self.cut_off():
                    log.info("accept not acknowledged by %s while the network is away; asking again", node)
                    await asyncio.sleep(NO_BID_RETRY_SECONDS)
                    continue
                log.info("accept not acknowledged by %s: %s; withdrawing it", node, e)
                self._withdrawn.setdefault(request.attempt_id, set()).add(node)
                asyncio.ensure_future(self.cancel(node, request))
                return False
        if reply.sender != node:
            self._drop(None, f"an accept answer for node {node} from {reply.sender}")
            return False
        return bool(reply.body.get("accepted"))


class Unacknowledged(BflowError):
    """Every node that could run the attempt had its accept withdrawn: a retryable failure."""

    retryable = True


def _why_none(request: ShardRequest, selector: dict[str, str], nodes: list[NodeInfo]) -> str:
    if not nodes:
        return "no compute node is reachable"
    ask = request.resources
    if not any(n.total.fits(ask) for n in nodes):
        biggest = max(nodes, key=lambda n: (n.total.memory, n.total.cpu))
        return (f"shard {request.shard_index} asks for cpu={ask.cpu:g} memory={ask.memory} disk={ask.disk} "
                f"gpu={ask.gpu}, more than any node has (largest: cpu={biggest.total.cpu:g} "
                f"memory={biggest.total.memory} disk={biggest.total.disk} gpu={biggest.total.gpu})")
    executor = request.transform.executor
    if not any(executor in n.executors for n in nodes):
        reasons = sorted({n.unavailable[executor] for n in nodes if executor in n.unavailable})
        if len(reasons) == 1:
            return f"{reasons[0]} on any node"
        if reasons:
            return f"no node can offer the {executor} executor: " + "; ".join(reasons)
        return f"no node has the {executor} executor"
    return f"no node carries the labels {selector}"
