"""One connection for many nodes of one process.

A devstack process of thousands of nodes opens one connection to the network, not thousands
(each NATS connection costs the server and the process a socket, buffers and a read loop).
Each node gets a `SharedConnection`: a view of that one transport with subscriptions of its
own. Closing a view unsubscribes what it subscribed; the connection stays for the others, and
its owner closes it. Every node still signs with its own key (transports/signing.py wraps
the view), so sharing a connection shares no identity.

A subject that every node subscribes to and that is only ever published on (a discover) is
subscribed once on the connection (`FanOut`): the server sends each envelope to the process
once, it is decoded once and handed, the same object, to each node's handler, not sent,
decoded and dispatched once per node.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from .base import Envelope, Handler, Subscription, Transport

log = logging.getLogger(__name__)


class FanOut:
    """One subscription on `inner` per subject `fans_out(subject)` accepts, shared by the
    handlers of every view; their replies are dropped (those subjects take no requests)."""

    def __init__(self, inner: Transport, fans_out: Callable[[str], bool]):
        self.inner, self.fans_out = inner, fans_out
        self._handlers: dict[str, dict[int, Handler]] = {}  # subject -> token -> handler
        self._subs: dict[str, Subscription] = {}
        self._lock = asyncio.Lock()
        self._tokens = 0

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        async with self._lock:
            self._tokens += 1
            token = self._tokens
            handlers = self._handlers.setdefault(subject, {})
            handlers[token] = handler
            if subject not in self._subs:
                try:
                    self._subs[subject] = await self.inner.subscribe(subject, self._deliverer(subject))
                except BaseException:
                    handlers.pop(token, None)
                    raise
        return _FannedOut(self, subject, token)

    def _deliverer(self, subject: str) -> Handler:
        async def deliver(envelope: Envelope) -> None:
            handlers = list(self._handlers.get(subject, {}).values())
            outcomes = await asyncio.gather(*(h(envelope) for h in handlers), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    log.warning("a handler of %s failed on a %r envelope: %r", subject, envelope.kind, outcome)
            return None
        return deliver

    async def _remove(self, subject: str, token: int) -> None:
        async with self._lock:
            handlers = self._handlers.get(subject, {})
            handlers.pop(token, None)
            if not handlers and subject in self._subs:
                self._handlers.pop(subject, None)
                await self._subs.pop(subject).unsubscribe()


class _FannedOut(Subscription):
    def __init__(self, fan_out: FanOut, subject: str, token: int):
        self.fan_out, self.subject, self.token = fan_out, subject, token

    async def unsubscribe(self) -> None:
        await self.fan_out._remove(self.subject, self.token)


class SharedConnection(Transport):
    def __init__(self, inner: Transport, fan_out: FanOut | None = None):
        super().__init__(inner.url)
        self.inner = inner
        self.fan_out = fan_out
        self.name = inner.name
        self._subs: list[Subscription] = []

    async def connect(self) -> None:
        """The owner connects the shared transport, once."""

    async def close(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.unsubscribe()

    def up_since(self) -> float:
        return self.inner.up_since()

    def local_host(self) -> str | None:
        return self.inner.local_host()

    async def publish(self, subject: str, envelope: Envelope) -> None:
        await self.inner.publish(subject, envelope)

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        if self.fan_out is not None and self.fan_out.fans_out(subject):
            sub = await self.fan_out.subscribe(subject, handler)
        else:
            sub = await self.inner.subscribe(subject, handler)
        self._subs.append(sub)
        return sub

    async def request(self, subject: str, envelope: Envelope, timeout: float) -> Envelope:
        return await self.inner.request(subject, envelope, timeout)
