"""Subjects, timings and small messages of the requester <-> node protocol.

    requester                                    node
      |-- bid (ShardRequest, selector) ------------>|  can I ever run it? now, or queued?
      |<------------------------------- Bid --------|
      |-- accept (ShardRequest, requester id) ----->|  reserve capacity (or queue), start
      |<------------------------------- ack --------|
      |<-- progress (queued/running/delivering) ----|  every HEARTBEAT_SECONDS: the lease
      |<-- result (ShardResult, acknowledged) ------|  retried until the requester acks
      |-- blocks (CIDs) --------------------------->|  outputs and logs, verified by CID
      |-- cancel (attempt id) --------------------->|  kill it

Announcements: a node publishes NodeInfo on `bflow.nodes.announce` when it starts, soon
after its load changes, when what it offers changes (an executor came up) and when its
connection came back after an outage; never only to say it is still there, so an idle network
is silent and no listener hears more as the network grows. A requester knows a node from its
announcement or its answer to a discover until a bid finds nobody serving the node's subject,
or BID_MISSES bids in a row go unanswered (bids asked side by side that time out together
count as one): then it is gone until it announces again. A requester whose own connection
came back, or that finds no node left for a shard among those it dropped, asks again (a
discover, at most every REDISCOVER_SECONDS).
Discovery: a requester (or `bflow nodes`) publishes a discover naming a subject of its own
(`reply`) and a `spread`; each node answers there, at a random moment within the spread, so
that ten thousand answers arrive as a stream at the asker alone, not as a burst at everyone.
A job's requester reads only the first of them, a random sample (network/requester.py
DISCOVER_SAMPLE), and then unsubscribes, so the server drops the rest.
"""

from __future__ import annotations

import functools
import logging

from pydantic import BaseModel

log = logging.getLogger("bacalhau_flow.protocol")

ANNOUNCE = "bflow.nodes.announce"
DISCOVER = "bflow.nodes.discover"

CHECK_SECONDS = 5.0  # how often a node looks for news to announce (a reconnection, an executor up)
BID_MISSES = 2  # bids in a row a node leaves unanswered before a requester drops it
REDISCOVER_SECONDS = 5.0  # the least time between a requester's discovers after its first
DISCOVER_SPREAD_SECONDS = 0.2  # how long a requester lets the answers to its discover take
HEARTBEAT_SECONDS = 1.0
LEASE_SECONDS = 6.0  # no heartbeat for this long: the node is lost, the attempt fails (retryable)
BID_TIMEOUT = 3.0
ACCEPT_TIMEOUT = 5.0
RESULT_ACK_TIMEOUT = 5.0
RESULT_DELIVERY_SECONDS = 120.0  # a node keeps offering a result this long
BLOCKS_TIMEOUT = 30.0


def node_subject(node_id: str, verb: str) -> str:
    """`bflow.node.<id>.<verb>` with verb in bid, accept, cancel, blocks."""
    return f"bflow.node.{node_id}.{verb}"


def requester_subject(requester_id: str, verb: str) -> str:
    """`bflow.requester.<id>.<verb>` with verb in progress, result."""
    return f"bflow.requester.{requester_id}.{verb}"


class Bid(BaseModel):
    node: str
    accepted: bool
    ready: bool = False  # fits the node's free capacity now (else it would queue)
    queued: int = 0  # shards already waiting on that node
    reason: str | None = None  # why not
    never: bool = False  # the node could never run it (too large, no executor, labels)


class Progress(BaseModel):
    attempt_id: str
    node: str
    state: str  # queued | running | delivering (its result offered, not yet acknowledged)


def handles(kind: str):
    """Wrap a message handler (a method taking the envelope): an envelope of another kind, or
    one whose body does not parse, is dropped with one log line and no answer. A peer on the
    network is not trusted to send what the subject expects (a replay to another subject,
    a mutated copy): that is no reason for a traceback."""
    def wrap(fn):
        @functools.wraps(fn)
        async def checked(self, envelope):
            if envelope.kind != kind:
                log.info("dropped a %r from %s where a %r belongs", envelope.kind, envelope.sender, kind)
                return None
            try:
                return await fn(self, envelope)
            except (KeyError, TypeError, ValueError) as e:  # pydantic's ValidationError is a ValueError
                log.warning("dropped a malformed %r from %s: %s", kind, envelope.sender, str(e).splitlines()[0])
                return None
        return checked
    return wrap
