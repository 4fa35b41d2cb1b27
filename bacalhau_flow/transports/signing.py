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

No replays: the signature also covers `to`, the subject the envelope was sent on (a reply's
is `reply:<id of the request>`), and `sent`, stamped when it is signed. A receiver refuses an
envelope signed for another subject (a captured accept resent to another node), a reply to
another request, and one sent more than MAX_AGE_S ago or more than CLOCK_SKEW_S in the future
(the clocks of two machines may differ by up to CLOCK_SKEW_S: keep them in sync with NTP).
Within that window the seen set refuses a repeat; past it, age does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict
from typing import Callable

from ..network.identity import Identity, node_id_for, verify
from .base import Envelope, Handler, Subscription, Transport, TransportError

log = logging.getLogger(__name__)

SIG_KEY = "_sig"  # reserved body key that carries {"key", "sig", "to"}
MAX_AGE_S = 120.0  # an envelope older than this is refused
CLOCK_SKEW_S = 30.0  # how far apart two machines' clocks may be


def signed_bytes(envelope: Envelope, to: str = "") -> bytes:
    """What is signed: canonical JSON of kind, body (without `_sig`), sender, id, sent and
    `to` (the subject, or `reply:<request id>`).

    Raises TypeError or ValueError when the envelope holds something JSON cannot encode.
    """
    body = {k: v for k, v in envelope.body.items() if k != SIG_KEY}
    fields = {"kind": envelope.kind, "body": body, "sender": envelope.sender, "id": envelope.id,
              "sent": envelope.sent, "to": to}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _signature_fault(envelope: Envelope, key, signature, to: str) -> str | None:
    """Why the signature does not hold, or None. Found once per envelope object: the nodes of
    one process given the same decoded envelope (transports/shared.py `FanOut`) check it once."""
    claim = (key, signature, to)
    found = getattr(envelope, "_signature_found", None)
    if found is not None and found[0] == claim:
        return found[1]
    try:
        why = None if verify(key, signed_bytes(envelope, to), signature) else "its signature is not valid"
    except (TypeError, ValueError):
        why = "it cannot be encoded"
    envelope._signature_found = (claim, why)  # not a field: never sent, never decoded from the wire
    return why


class _SignedSubscription(Subscription):
    """A subscription whose handler sees nothing more once `unsubscribe` was called, also
    what the inner transport had already taken in (a burst of answers: none is verified)."""

    inner: Subscription | None = None
    ended = False

    async def unsubscribe(self) -> None:
        self.ended = True
        if self.inner is not None:
            await self.inner.unsubscribe()


def addressed_to(to: str, subject: str) -> bool:
    """Whether an envelope signed for `to` belongs on the subscription `subject` (which may
    end in `.*`: one more word)."""
    if subject.endswith(".*"):
        prefix = subject[:-1]
        return to.startswith(prefix) and "." not in to[len(prefix):] and len(to) > len(prefix)
    return to == subject


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
        await self.inner.publish(subject, self._seal(envelope, subject))

    async def request(self, subject: str, envelope: Envelope, timeout: float) -> Envelope:
        """Sign `envelope`, send it, and return the reply once its signature checks out.

        Raises NoResponders or RequestTimeout as the inner transport does, and
        TransportError when the reply fails its signature check.
        """
        sealed = self._seal(envelope, subject)
        reply = await self.inner.request(subject, sealed, timeout)
        opened = self._open(reply, f"in a reply on {subject}", lambda to: to == "reply:" + sealed.id)
        if opened is None:
            raise TransportError(f"reply from {reply.sender or '(no sender)'} failed its signature check")
        return opened

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        """Call `handler` with each correctly signed, not yet seen envelope on `subject`
        (its `_sig` removed); the reply it returns is signed."""
        seen: OrderedDict[tuple[str, str], asyncio.Future] = OrderedDict()
        handle = _SignedSubscription()

        async def checked(envelope: Envelope) -> Envelope | None:
            if handle.ended:  # delivered before the unsubscribe took effect: not even checked
                return None
            opened = self._open(envelope, f"on {subject}", lambda to: addressed_to(to, subject))
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
                    reply = self._seal(reply, "reply:" + opened.id)
                return reply
            finally:
                done.set_result(reply)

        handle.inner = await self.inner.subscribe(subject, checked)
        return handle

    def _seal(self, envelope: Envelope, to: str) -> Envelope:
        """A signed copy of `envelope` sent by this node to `to` (same id, kind and body; sent
        now, so a result offered again after an outage is not refused as old)."""
        body = {k: v for k, v in envelope.body.items() if k != SIG_KEY}
        sealed = Envelope(envelope.kind, body, sender=self.node_id, id=envelope.id, sent=time.time())
        signature = self.identity.sign(signed_bytes(sealed, to))
        sealed.body[SIG_KEY] = {"key": self.identity.public_key_b64, "sig": signature, "to": to}
        return sealed

    def _open(self, envelope: Envelope, where: str, expected: Callable[[str], bool]) -> Envelope | None:
        """The envelope without its `_sig` if the signature is good, its key is the sender's,
        it was signed for what `expected` accepts and it is fresh; otherwise None, counted in
        `rejected` and logged. Never raises."""
        body = envelope.body if isinstance(envelope.body, dict) else {}
        sig = body.get(SIG_KEY)
        if not isinstance(sig, dict):
            return self._reject(envelope, where, "it is not signed")
        key, signature, to = sig.get("key"), sig.get("sig"), sig.get("to")
        if not isinstance(to, str):
            return self._reject(envelope, where, "it names no recipient")
        why = _signature_fault(envelope, key, signature, to)
        if why:
            return self._reject(envelope, where, why)
        if node_id_for(key) != envelope.sender:
            return self._reject(envelope, where, f"it is signed by {node_id_for(key)}")
        if not expected(to):
            return self._reject(envelope, where, f"it was signed for {to}")
        age = time.time() - envelope.sent if isinstance(envelope.sent, (int, float)) else math.inf
        if not -CLOCK_SKEW_S <= age <= MAX_AGE_S + CLOCK_SKEW_S:
            return self._reject(envelope, where, f"it was sent {age:.0f} s ago (outside the replay window)")
        clean = {k: v for k, v in body.items() if k != SIG_KEY}
        return Envelope(envelope.kind, clean, sender=envelope.sender, id=envelope.id, sent=envelope.sent)

    def _reject(self, envelope: Envelope, where: str, why: str) -> None:
        self.rejected += 1
        log.warning(
            "dropped a %r message %s claiming to be from %r: %s", envelope.kind, where, envelope.sender, why
        )
        return None
