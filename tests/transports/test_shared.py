"""SharedConnection and FanOut: the nodes of one process on one connection. A subject they
all listen on is subscribed once; each envelope on it is decoded and its signature checked
once, and still reaches every node's handler, signed checks and all."""

import asyncio

from bacalhau_flow.network.identity import Identity
from bacalhau_flow.transports import signing
from bacalhau_flow.transports.base import Envelope
from bacalhau_flow.transports.memory import MemoryHub, MemoryTransport
from bacalhau_flow.transports.shared import FanOut, SharedConnection
from bacalhau_flow.transports.signing import SIG_KEY, SignedTransport

EVERYONE = "bflow.test.everyone"
OWN = "bflow.test.own"


def _views(hub: MemoryHub, count: int):
    connection = MemoryTransport(hub=hub)
    fan_out = FanOut(connection, lambda subject: subject == EVERYONE)
    return [SignedTransport(SharedConnection(connection, fan_out), Identity.generate()) for _ in range(count)]


def test_a_subject_every_view_listens_on_is_subscribed_and_verified_once(monkeypatch):
    checks = []
    verify = signing.verify
    monkeypatch.setattr(signing, "verify", lambda *a: checks.append(1) or verify(*a))

    async def main():
        hub = MemoryHub()
        views = _views(hub, 3)
        sender = SignedTransport(MemoryTransport(hub=hub), Identity.generate())
        got: dict[int, list] = {i: [] for i in range(3)}
        for i, view in enumerate(views):
            async def handler(envelope, i=i):
                got[i].append(envelope.body["n"])
            await view.subscribe(EVERYONE, handler)
            await view.subscribe(OWN, handler)
        subscribed = {s: len(hub.subscribers.get(s, [])) for s in (EVERYONE, OWN)}
        await sender.publish(EVERYONE, Envelope("hello", {"n": 1}, sender=sender.node_id))
        await asyncio.sleep(0.05)
        verified = len(checks)
        forged = sender._seal(Envelope("hello", {"n": 2}, sender=sender.node_id), EVERYONE)
        forged.body["n"] = 3  # changed after it was signed
        await MemoryTransport(hub=hub).publish(EVERYONE, forged)
        await asyncio.sleep(0.05)
        rejected = [v.rejected for v in views]
        for view in views:
            await view.close()
            await view.inner.close()
        return got, subscribed, verified, len(checks) - verified, rejected, len(hub.subscribers.get(EVERYONE, []))

    got, subscribed, verified, verified_forged, rejected, left = asyncio.run(main())
    assert got == {0: [1], 1: [1], 2: [1]}  # every node's handler, the forgery in none
    assert subscribed == {EVERYONE: 1, OWN: 3}
    assert verified == 1 and verified_forged == 1
    assert rejected == [1, 1, 1]
    assert left == 0  # the last view gone, the shared subscription is gone too


def test_a_handler_that_fails_does_not_keep_the_envelope_from_the_others():
    async def main():
        hub = MemoryHub()
        connection = MemoryTransport(hub=hub)
        fan_out = FanOut(connection, lambda subject: True)
        got = []

        async def fails(envelope):
            raise RuntimeError("a node's bug")

        async def records(envelope):
            got.append(envelope.kind)

        first = await SharedConnection(connection, fan_out).subscribe(EVERYONE, fails)
        await SharedConnection(connection, fan_out).subscribe(EVERYONE, records)
        await MemoryTransport(hub=hub).publish(EVERYONE, Envelope("hello", {}))
        await asyncio.sleep(0.05)
        await first.unsubscribe()
        await MemoryTransport(hub=hub).publish(EVERYONE, Envelope("again", {}))
        await asyncio.sleep(0.05)
        return got

    assert asyncio.run(main()) == ["hello", "again"]


def test_the_signature_check_of_one_object_is_not_reused_for_another_claim():
    identity = Identity.generate()
    sealed = SignedTransport(MemoryTransport(hub=MemoryHub()), identity)._seal(
        Envelope("hello", {"n": 1}, sender=identity.node_id), EVERYONE)
    sig = sealed.body[SIG_KEY]
    assert signing._signature_fault(sealed, sig["key"], sig["sig"], EVERYONE) is None
    assert signing._signature_fault(sealed, sig["key"], sig["sig"], "bflow.other") is not None
