"""One connection for many nodes of one process.

A devstack process of thousands of nodes opens one connection to the network, not thousands
(each NATS connection costs the server and the process a socket, buffers and a read loop).
Each node gets a `SharedConnection`: a view of that one transport with subscriptions of its
own. Closing a view unsubscribes what it subscribed; the connection stays for the others, and
its owner closes it. Every node still signs with its own key (transports/signing.py wraps
the view), so sharing a connection shares no identity.
"""

from __future__ import annotations

from .base import Envelope, Handler, Subscription, Transport


class SharedConnection(Transport):
    def __init__(self, inner: Transport):
        super().__init__(inner.url)
        self.inner = inner
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
        sub = await self.inner.subscribe(subject, handler)
        self._subs.append(sub)
        return sub

    async def request(self, subject: str, envelope: Envelope, timeout: float) -> Envelope:
        return await self.inner.request(subject, envelope, timeout)
