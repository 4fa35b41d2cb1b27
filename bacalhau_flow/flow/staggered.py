"""Task runs started a few per turn of the event loop, so that the loop keeps turning.

A job maps all its shards at once: a thousand `submit` calls land on the runner's loop
together. Created at once, their task engines' first steps (Prefect's setup of a task run,
~3.5 ms each on 2 cores, up to the first await) all ran in one turn of the loop: 3.1 s with
~900 of them, during which no timer fired and no message was answered, so the embedded
nodes' bids ran into their timeouts (network/protocol.py BID_TIMEOUT) and a requester could
drop every node ("no compute node is reachable"). Started BATCH a turn, their first steps
take ~0.1 s a turn (no turn over 0.5 s in a 1000-shard job); the work and the order are the
same, and nothing is held back (no limit on how many run at once).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from typing import Callable, Coroutine

BATCH = 32  # task runs started per turn of the loop (~0.1 s of their first steps)
Started = Callable[[asyncio.Task], None]
Dropped = Callable[[], None]


class StaggeredStarts:
    """Starts coroutines as tasks on `loop`, at most BATCH per turn, first come first started.
    Its methods are called on the loop's own thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, batch: int = BATCH):
        self._loop, self._batch = loop, batch
        self._waiting: deque[tuple[Coroutine, contextvars.Context, Started, Dropped]] = deque()

    def start(self, coro: Coroutine, context: contextvars.Context, started: Started, dropped: Dropped) -> None:
        """Run `coro` in `context` soon: `started(task)` once its task exists, or `dropped()`
        if `drop` comes first."""
        self._waiting.append((coro, context, started, dropped))
        if len(self._waiting) == 1:  # else a turn of starting is already scheduled
            self._loop.call_soon(self._start_some)

    def drop(self) -> None:
        """Never start those not started yet (a closing runner): each coroutine is closed and
        its `dropped()` called."""
        while self._waiting:
            coro, _, _, dropped = self._waiting.popleft()
            coro.close()
            dropped()

    def __len__(self) -> int:
        return len(self._waiting)

    def _start_some(self) -> None:
        for _ in range(min(self._batch, len(self._waiting))):
            coro, context, started, _ = self._waiting.popleft()
            started(self._loop.create_task(coro, context=context))
        if self._waiting:
            self._loop.call_soon(self._start_some)  # after the first steps of those just created
