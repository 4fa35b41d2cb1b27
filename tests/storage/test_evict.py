"""Eviction under a store limit (`bflow node --max-store`): least recently used unpinned DAGs
go first; what a running shard or an unacknowledged result pins never goes."""

import os
import time

from bacalhau_flow.storage import ContentStore
from bacalhau_flow.storage.evict import StoreBudget

MB = 1 << 20


def dag(store: ContentStore, seed: int) -> str:
    return store.put_bytes(os.urandom(MB) + bytes([seed]))


def present(store: ContentStore, cid: str) -> bool:
    return all(store.has(c) for c in store.blocks_of(cid))


def test_acknowledged_results_go_first_and_pinned_ones_never(tmp_path):
    store = ContentStore(tmp_path / "store")
    old, recent, running = dag(store, 1), dag(store, 2), dag(store, 3)
    budget = StoreBudget(store, limit=int(2.5 * MB))
    budget.pin([old])
    budget.unpin([old])  # acknowledged first
    time.sleep(0.01)
    budget.pin([recent])
    budget.unpin([recent])  # acknowledged later
    budget.pin([running])  # a shard still running holds it
    assert budget.evict() > MB
    assert not store.has(old) and present(store, recent) and present(store, running)
    assert budget.size() <= budget.limit

    budget.limit = MB // 2  # below what the running shard holds
    budget.evict()
    assert not store.has(recent)
    assert present(store, running)  # over the limit rather than break a running shard


def test_within_the_limit_nothing_is_evicted(tmp_path):
    store = ContentStore(tmp_path / "store")
    cids = [dag(store, i) for i in range(3)]
    budget = StoreBudget(store, limit=10 * MB)
    assert budget.evict() == 0
    assert all(present(store, c) for c in cids)


def test_blocks_from_before_a_restart_go_oldest_first_but_not_fresh_ones(tmp_path):
    store = ContentStore(tmp_path / "store")
    stale, fresh = dag(store, 1), dag(store, 2)
    long_ago = time.time() - 3600
    for cid in store.blocks_of(stale):
        os.utime(store.block_path(cid), (long_ago, long_ago))
    budget = StoreBudget(store, limit=int(1.5 * MB))  # a new process: it knows no roots
    budget.evict()
    assert not present(store, stale)
    assert present(store, fresh)  # written in the last minute: a pull may still be under way
