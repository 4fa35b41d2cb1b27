"""Who is on a network: every node's answer to one discover (`bflow nodes`, and the nodes
`batch_size: auto` counts when a run names a network, plan/batching.py)."""

from __future__ import annotations

import asyncio
import time

DISCOVER_SPREAD_S = 0.5  # the nodes answer within this
QUIET_S = 1.0  # ... and listening stops once no new answer came for this long
FIRST_ANSWER_S = 3.0  # ... but not before this, while none came (busy nodes answer late)


async def discover(url: str, wait: float = 10.0) -> list:
    """The `NodeInfo`s of the live nodes of the network at `url`, by id."""
    from ..home import store_root
    from ..storage import ContentStore
    from ..transports import transport_for
    from ..transports.signing import SignedTransport
    from .embedded import client_identity
    from .requester import Requester

    transport = SignedTransport(transport_for(url), client_identity())
    await transport.connect()
    requester = Requester(transport, ContentStore(store_root()))
    try:
        # Every node answers at a moment within the spread; listen until the answers stop coming
        # (QUIET_S without a new one after the spread; FIRST_ANSWER_S while none came), `wait` s at most.
        started = time.monotonic()
        spread = min(DISCOVER_SPREAD_S, wait / 2)
        await requester.start(expect_nodes=10**6, wait=0.0, spread=spread)
        count, last_new = 0, time.monotonic()
        while (now := time.monotonic()) - started < wait:
            if len(requester.nodes) != count:
                count, last_new = len(requester.nodes), now
            elif now - started > spread and now - last_new > QUIET_S and (count or now - started > FIRST_ANSWER_S):
                break
            await asyncio.sleep(0.05)
        return sorted(requester.live_nodes(), key=lambda n: n.id)
    finally:
        await requester.stop()
        await transport.close()


def nodes_for_auto_batches(pipelines, network: str | None) -> list | None:
    """The nodes `batch_size: auto` is chosen for: those of `network`, asked once, when a
    pipeline wants it; None (the embedded network's) without a network or an `auto`."""
    if network is None or not any(p.input.batch_size == "auto" for p in pipelines):
        return None
    return asyncio.run(discover(network))
