"""Keeping a node's content store within a size (`bflow node --max-store SIZE`).

A node's store fills with the inputs it pulled and the outputs it produced. Once a requester
has acknowledged a result, the requester holds those blocks itself, so the node may drop
them. `StoreBudget` remembers, per DAG root, when the node last used it (an input staged, an
output made), and which roots are pinned: the inputs of shards still running and the outputs
of results not yet acknowledged. `evict()` deletes the least recently used unpinned DAGs
first, then any other unpinned block oldest first (blocks left from before a restart; not
those of the last RECENT_SECONDS), until the store is within its limit. A block shared with a
pinned DAG is never deleted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter

from ..errors import ContentError
from .store import ContentStore

log = logging.getLogger(__name__)

# Blocks written this recently are left alone by the oldest-first pass: a pull may be writing
# a DAG's children before its parent, so they are not yet reachable from any pinned root.
RECENT_SECONDS = 60.0


class StoreBudget:
    def __init__(self, store: ContentStore, limit: int):
        self.store = store
        self.limit = limit
        self._used: dict[str, float] = {}  # DAG root -> last use (time.time())
        self._pins: Counter[str] = Counter()  # DAG root -> holders (attempts)
        self._lock = threading.Lock()

    def pin(self, roots: list[str]) -> None:
        with self._lock:
            now = time.time()
            for root in roots:
                self._pins[root] += 1
                self._used[root] = now

    def unpin(self, roots: list[str]) -> None:
        with self._lock:
            for root in roots:
                self._pins[root] -= 1
                if self._pins[root] <= 0:
                    del self._pins[root]

    def size(self) -> int:
        return sum(size for _, size, _ in _blocks(self.store))

    def evict(self) -> int:
        """Delete unpinned blocks until the store is within its limit; return the bytes freed."""
        blocks = _blocks(self.store)
        total = sum(size for _, size, _ in blocks)
        if total <= self.limit:
            return 0
        with self._lock:
            pinned_roots, used = list(self._pins), dict(self._used)
        pinned = _block_paths(self.store, pinned_roots)
        by_path = {path: (mtime, size) for mtime, size, path in blocks}
        freed = 0

        def drop(path: str) -> None:
            nonlocal total, freed
            if path in pinned or path not in by_path:
                return
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            size = by_path.pop(path)[1]
            total -= size
            freed += size

        for root, _ in sorted(used.items(), key=lambda item: item[1]):  # least recently used DAGs
            if total <= self.limit:
                break
            if root in pinned_roots:
                continue
            for path in _block_paths(self.store, [root]):
                drop(path)
            with self._lock:
                self._used.pop(root, None)
        settled = time.time() - RECENT_SECONDS
        for path, (mtime, _) in sorted(by_path.items(), key=lambda item: item[1][0]):  # the rest, oldest first
            if total <= self.limit or mtime > settled:
                break
            drop(path)
        if total > self.limit:
            log.warning("content store %s is %d bytes, over its limit of %d: the rest is in use by running shards",
                        self.store.root, total, self.limit)
        return freed


def _blocks(store: ContentStore) -> list[tuple[float, int, str]]:
    """(mtime, size, path) of every block file in the store."""
    found = []
    for dirpath, _, names in os.walk(store.blocks):
        for name in names:
            if name.startswith("."):  # a block being written
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            found.append((st.st_mtime, st.st_size, path))
    return found


def _block_paths(store: ContentStore, roots: list[str]) -> set[str]:
    """The files of every block present under `roots` (a missing block ends that branch)."""
    paths: set[str] = set()
    for root in roots:
        try:
            paths.update(store._path(cid) for cid, held in store.walk(root) if held)
        except ContentError:
            continue
    return paths
