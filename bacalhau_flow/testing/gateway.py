"""A node's IPFS gateway for tests: served from an event loop in a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Iterator

from ..storage import ContentStore
from ..storage.gateway import Gateway


@contextlib.contextmanager
def gateway_in_thread(store: ContentStore) -> Iterator[str]:
    """Serve `store` on a free local port while the block runs; yields the gateway's URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    gateway = Gateway(store)
    try:
        yield asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(10)
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
