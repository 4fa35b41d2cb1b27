"""Signing and checking envelopes with the replay fields (recipient, send time; transports/
signing.py) beside signing without them, as before issue 11, in one run: messages per second
for a bid request the size of a real one.

    python bench/signing_bench.py [N]      (default 5000)
"""

from __future__ import annotations

import json
import sys
import time

from bacalhau_flow.network.identity import Identity, verify
from bacalhau_flow.transports.base import Envelope
from bacalhau_flow.transports.signing import SignedTransport
from bacalhau_flow.transports.memory import MemoryTransport

REQUEST = {"request": {"job_id": "j-" + "0" * 32, "pipeline": "bench", "shard_index": 7, "shard_id": "sh-1234",
                       "shard_count": 100, "attempt": 1,
                       "transform": {"executor": "local", "cmd": ["sh", "-c", "wc -w $BFLOW_INPUTS/*/*"], "env": {}},
                       "inputs": [{"name": "books", "url": "ipfs://bafybeiby7pmf5rhb57dhnubt263u3nni4s6mqvpyfcfcm2mi"}],
                       "datums": [{"books": [f"/book-{i}.txt" for i in range(10)]}]},
           "selector": {}}


def before(identity: Identity, n: int) -> float:
    """The signing of before: kind, body, sender, id and sent; checked by signature only."""
    start = time.perf_counter()
    for _ in range(n):
        env = Envelope("bid_request", REQUEST, sender=identity.node_id)
        data = json.dumps({"kind": env.kind, "body": env.body, "sender": env.sender, "id": env.id, "sent": env.sent},
                          sort_keys=True, separators=(",", ":")).encode()
        sig = identity.sign(data)
        assert verify(identity.public_key_b64, data, sig)
    return time.perf_counter() - start


def now(identity: Identity, n: int) -> float:
    transport = SignedTransport(MemoryTransport(), identity)
    subject = "bflow.node.n-abcdefghijklmnop.bid"
    start = time.perf_counter()
    for _ in range(n):
        sealed = transport._seal(Envelope("bid_request", REQUEST), subject)
        assert transport._open(sealed, "bench", lambda to: to == subject) is not None
    return time.perf_counter() - start


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    identity = Identity.generate()
    old, new = before(identity, n), now(identity, n)
    print(f"{n} bid requests signed and checked")
    print(f"  before (no recipient, no window): {n / old:8.0f} msg/s")
    print(f"  now (recipient, time window):     {n / new:8.0f} msg/s")
    print(f"  now / before: {new / old:.2f}x the time")
