"""When the nodes of one process look for news to announce: on one timer per event loop.

A node announces only news (protocol.py): its load as it changes, and what it finds when it
looks, every CHECK_SECONDS: an executor it could not offer came up, or its connection came
back. The look is local and cheap, but a devstack process holds thousands of nodes on one
event loop, and a timer each woke that loop N / CHECK_SECONDS times a second: 10,000 idle
nodes in 8 processes used 0.17 cores, taken from the job on a small machine. So the nodes of a
loop that look at the same interval share one `Round`, jittered as a whole (processes started
together do not look together ever after); a node with news spreads its announcement over the
interval itself (ComputeNode.look_for_news).
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from typing import Protocol

log = logging.getLogger("bacalhau_flow.node")


class Looking(Protocol):
    def look_for_news(self) -> None: ...


class Round:
    """Every `every` s (jittered), call `look_for_news()` of each member; stops with its last member."""

    def __init__(self, loop: asyncio.AbstractEventLoop, every: float):
        self.loop, self.every = loop, every
        self.members: dict[int, Looking] = {}  # id(node) -> node, in the order they joined
        self._task: asyncio.Task | None = None

    def join(self, node: Looking) -> None:
        self.members[id(node)] = node
        if self._task is None:
            self._task = self.loop.create_task(self._forever())

    def leave(self, node: Looking) -> None:
        self.members.pop(id(node), None)
        if not self.members and self._task is not None:
            self._task.cancel()
            self._task = None
            rounds = _ROUNDS.get(self.loop)
            if rounds is not None and rounds.get(self.every) is self:
                del rounds[self.every]

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.every * random.uniform(0.8, 1.2))
            for node in list(self.members.values()):
                try:
                    node.look_for_news()
                except Exception:  # noqa: BLE001 - one node's failure must not stop the others' looks
                    log.exception("looking for news failed")


_ROUNDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Round]] = weakref.WeakKeyDictionary()


def round_for(every: float) -> Round:
    """The round of the running event loop for interval `every` (made on first use)."""
    loop = asyncio.get_running_loop()
    rounds = _ROUNDS.setdefault(loop, {})
    if every not in rounds:
        rounds[every] = Round(loop, every)
    return rounds[every]
