"""Signed messages over any transport (ARCHITECTURE.md decision 5).

`SignedTransport(inner, identity)` wraps a Transport. Every envelope it sends (publish,
request, and the replies its handlers return) carries `sender` = the identity's node id
and an ed25519 signature over the canonical JSON of (kind, body, sender, id, sent).
Every envelope it receives (subscribed messages and request replies) must carry a valid
signature by a key whose node id is the claimed sender; anything else is dropped and
counted in `rejected`.

The signature travels in the body under the reserved key `_sig`
(`{"key": <public key b64>, "sig": <signature b64>}`), so that any transport carries it
unchanged; handlers never see it.

Each subscription also drops envelopes whose (sender, id) it has already delivered,
counted in `duplicates`; a repeated request is answered with the first reply again, so
its handler runs once (decision 3: message ids make duplicates harmless).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict

from ..network.identity import Identity, node_id_for, verify
from .base import Envelope, Handler, Subscription, Transport, TransportError

log = logging.getLogger(__name__)

SIG_KEY = "_sig"  # reserved body key that carries {"key", "sig"}


def signed_bytes(envelope: Envelope) -> bytes:
    """What is signed: canonical JSON of kind, body (without `_sig`), sender, id and sent.

    Raises TypeError or ValueError when the envelope holds something JSON cannot encode.
    """
    body = {k: v for k, v in envelope.body.items() if k != SIG_KEY}
    fields = {"kind": envelope.kind, "body": body, "sender": envelope.sender, "id": envelope.id}
    fields["sent"] = envelope.sent
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


class SignedTransport(Transport):
    """Signs what goes out through `inner` and checks what comes in (composition, any backend)."""

    def __init__(self, inner: Transport, identity: Identity, *, seen_limit: int = 10_000):
        super().__init__(inner.url)
        self.inner = inner
        self.identity = identity
        self.name = f"signed+{inner.name}"
        self.seen_limit = seen_limit
        self.rejected = 0  # envelopes dropped for a missing or bad signature, or a sender not their key's
        self.duplicates = 0  # envelopes dropped because their subscription had already delivered them

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    async def connect(self) -> None:
        """Connect the inner transport. Raises TransportError as it does."""
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    def local_host(self) -> str | None:
        return self.inner.local_host()

    def up_since(self) -> float:
        return self.inner.up_since()

    async def publish(self, subject: str, envelope: Envelope) -> None:
        """Sign `envelope` (as this node) and announce it through the inner transport."""
        await self.inner.publish(subject, self._seal(envelope))

    async def request(self, subject: str, envelope: Envelope, timeout: float) -> Envelope:
        """Sign `envelope`, send it, and return the reply once its signature checks out.

        Raises NoResponders or RequestTimeout as the inner transport does, and
        TransportError when the reply fails its signature check.
        """
        reply = await self.inner.request(subject, self._seal(envelope), timeout)
        opened = self._open(reply, f"in a reply on {subject}")
        if opened is None:
            raise TransportError(f"reply from {reply.sender or '(no sender)'} failed its signature check")
        return opened

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        """Call `handler` with each correctly signed, not yet seen envelope on `subject`
        (its `_sig` removed); the reply it returns is signed."""
        seen: OrderedDict[tuple[str, str], asyncio.Future] = OrderedDict()

        async def checked(envelope: Envelope) -> Envelope | None:
            opened = self._open(envelope, f"on {subject}")
            if opened is None:
                return None
            key = (opened.sender, opened.id)
            first = seen.get(key)
            if first is not None:
                seen.move_to_end(key)
                self.duplicates += 1
                return await asyncio.shield(first)  # a repeated request gets the first reply
            done = seen[key] = asyncio.get_running_loop().create_future()
            if len(seen) > self.seen_limit:
                seen.popitem(last=False)
            reply = None
            try:
                reply = await handler(opened)
                if reply is not None:
                    reply = self._seal(reply)
                return reply
            finally:
                done.set_result(reply)

        return await self.inner.subscribe(subject, checked)

    def _seal(self, envelope: Envelope) -> Envelope:
        """A signed copy of `envelope` sent by this node (same id, kind, body and time)."""
        body = {k: v for k, v in envelope.body.items() if k != SIG_KEY}
        sealed = Envelope(envelope.kind, body, sender=self.node_id, id=envelope.id, sent=envelope.sent)
        signature = self.identity.sign(signed_bytes(sealed))
        sealed.body[SIG_KEY] = {"key": self.identity.public_key_b64, "sig": signature}
        return sealed

    def _open(self, envelope: Envelope, where: str) -> Envelope | None:
        """The envelope without its `_sig` if the signature is good and its key is the
        sender's; otherwise None, counted in `rejected` and logged. Never raises."""
        body = envelope.body if isinstance(envelope.body, dict) else {}
        sig = body.get(SIG_KEY)
        if not isinstance(sig, dict):
            return self._reject(envelope, where, "it is not signed")
        key, signature = sig.get("key"), sig.get("sig")
        try:
            data = signed_bytes(envelope)
        except (TypeError, ValueError):
            return self._reject(envelope, where, "it cannot be encoded")
        if not verify(key, data, signature):
            return self._reject(envelope, where, "its signature is not valid")
        if node_id_for(key) != envelope.sender:
            return self._reject(envelope, where, f"it is signed by {node_id_for(key)}")
        clean = {k: v for k, v in body.items() if k != SIG_KEY}
        return Envelope(envelope.kind, clean, sender=envelope.sender, id=envelope.id, sent=envelope.sent)

    def _reject(self, envelope: Envelope, where: str, why: str) -> None:
        self.rejected += 1
        log.warning(
            "dropped a %r message %s claiming to be from %r: %s", envelope.kind, where, envelope.sender, why
        )
        return None
