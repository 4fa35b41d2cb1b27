"""Subjects, timings and small messages of the requester <-> node protocol.

    requester                                    node
      |-- bid (ShardRequest, selector) ------------>|  can I ever run it? now, or queued?
      |<------------------------------- Bid --------|
      |-- accept (ShardRequest, requester id) ----->|  reserve capacity (or queue), start
      |<------------------------------- ack --------|
      |<-- progress (queued/running heartbeats) ----|  every HEARTBEAT_SECONDS: the lease
      |<-- result (ShardResult, acknowledged) ------|  retried until the requester acks
      |-- blocks (CIDs) --------------------------->|  outputs and logs, verified by CID
      |-- cancel (attempt id) --------------------->|  kill it

Announcements: every node publishes NodeInfo on `bflow.nodes.announce` every
ANNOUNCE_SECONDS; a node not heard from for NODE_TTL_SECONDS is gone.
"""

from __future__ import annotations

from pydantic import BaseModel

ANNOUNCE = "bflow.nodes.announce"
DISCOVER = "bflow.nodes.discover"

ANNOUNCE_SECONDS = 2.0
NODE_TTL_SECONDS = 10.0
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
    state: str  # queued | running
