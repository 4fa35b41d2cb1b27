"""SignedTransport: every message signed by its sender's key, checked on arrival.

Forgeries are made at the wire level: a raw (unsigned) MemoryTransport on the same hub
sends envelopes that claim to come from a signed node.
"""

import asyncio
import logging

import pytest

from bacalhau_flow.network.identity import Identity
from bacalhau_flow.transports.base import Envelope, NoResponders, TransportError
from bacalhau_flow.transports.memory import MemoryHub, MemoryTransport
from bacalhau_flow.transports.signing import SIG_KEY, SignedTransport, signed_bytes

SUBJECT = "bflow.test.announce"


def signed_pair(hub):
    return (SignedTransport(MemoryTransport(hub=hub), Identity.generate()) for _ in range(2))


async def settle():
    for _ in range(5):
        await asyncio.sleep(0.01)


def forge(identity: Identity, sender: str, kind="hello", body=None) -> Envelope:
    """An envelope claiming `sender`, signed (correctly) by `identity`."""
    env = Envelope(kind, dict(body or {"n": 1}), sender=sender)
    env.body[SIG_KEY] = {"key": identity.public_key_b64, "sig": identity.sign(signed_bytes(env))}
    return env


def test_two_signed_transports_interoperate_end_to_end():
    async def main():
        hub = MemoryHub()
        a, b = signed_pair(hub)
        got = []

        async def on_announce(env):
            got.append(env)

        async def on_run(env):
            return Envelope("result", {"echo": env.body["x"], "from": env.sender}, sender="ignored")

        await a.subscribe(SUBJECT, on_announce)
        await a.subscribe(f"bflow.node.{a.node_id}.run", on_run)
        await b.publish(SUBJECT, Envelope("hello", {"n": 1}))
        reply = await b.request(f"bflow.node.{a.node_id}.run", Envelope("run", {"x": 42}), timeout=2)
        await settle()

        assert [(e.kind, e.body, e.sender) for e in got] == [("hello", {"n": 1}, b.node_id)]
        assert reply.sender == a.node_id  # forced to the signer's id
        assert reply.body == {"echo": 42, "from": b.node_id}  # no _sig on either side
        assert a.rejected == b.rejected == 0

    asyncio.run(main())


def test_forged_tampered_and_unsigned_messages_are_dropped_and_counted(caplog):
    async def main():
        hub = MemoryHub()
        a, b = signed_pair(hub)
        other = Identity.generate()
        raw = MemoryTransport(hub=hub)
        wire = []
        got = []

        async def on_announce(env):
            got.append(env.body)

        async def capture(env):
            wire.append(env)

        await a.subscribe(SUBJECT, on_announce)
        await raw.subscribe(SUBJECT, capture)
        await b.publish(SUBJECT, Envelope("hello", {"n": 1}))
        await settle()
        (good,) = wire  # the signed envelope as it crossed the wire

        tampered_body = Envelope(good.kind, {**good.body, "n": 2}, good.sender, good.id + "b", good.sent)
        tampered_sender = Envelope(good.kind, dict(good.body), other.node_id, good.id + "s", good.sent)
        wrong_key = forge(other, sender=b.node_id)  # a valid signature, but not by b's key
        unsigned = Envelope("hello", {"n": 3}, sender=b.node_id)
        bad_sig = Envelope(good.kind, {**good.body, SIG_KEY: {"key": "x", "sig": 5}}, good.sender, "z", good.sent)
        not_a_dict = Envelope("hello", {"n": 4, SIG_KEY: "sig"}, sender=b.node_id)
        for env in (tampered_body, tampered_sender, wrong_key, unsigned, bad_sig, not_a_dict):
            await raw.publish(SUBJECT, env)
        await b.publish(SUBJECT, Envelope("hello", {"n": 5}))  # still fine afterwards
        await settle()

        assert got == [{"n": 1}, {"n": 5}]
        assert a.rejected == 6
        assert b.node_id in caplog.text and "dropped" in caplog.text

    with caplog.at_level(logging.WARNING, logger="bacalhau_flow.transports.signing"):
        asyncio.run(main())


def test_a_forged_request_never_reaches_the_handler():
    async def main():
        hub = MemoryHub()
        a, b = signed_pair(hub)
        raw = MemoryTransport(hub=hub)
        calls = []

        async def on_run(env):
            calls.append(env)
            return Envelope("result", {})

        await a.subscribe("bflow.node.a.run", on_run)
        with pytest.raises(NoResponders):  # dropped: no reply at all
            await raw.request("bflow.node.a.run", Envelope("run", {}, sender=b.node_id), timeout=1)
        assert await b.request("bflow.node.a.run", Envelope("run", {}), timeout=1)
        assert len(calls) == 1 and calls[0].sender == b.node_id
        assert a.rejected == 1

    asyncio.run(main())


@pytest.mark.parametrize("how", ["unsigned", "wrong key", "tampered"])
def test_a_forged_reply_makes_the_request_raise(how):
    async def main():
        hub = MemoryHub()
        a, b = signed_pair(hub)
        raw = MemoryTransport(hub=hub)

        async def impostor(env):  # answers as if it were a
            if how == "unsigned":
                return Envelope("result", {"ok": True}, sender=a.node_id)
            if how == "wrong key":
                return forge(Identity.generate(), sender=a.node_id, kind="result")
            reply = forge(a.identity, sender=a.node_id, kind="result", body={"ok": True})
            reply.body["ok"] = False
            return reply

        await raw.subscribe("bflow.node.a.run", impostor)
        with pytest.raises(TransportError, match=f"reply from {a.node_id} failed its signature check"):
            await b.request("bflow.node.a.run", Envelope("run", {}), timeout=1)
        assert b.rejected == 1

    asyncio.run(main())


def test_duplicates_are_delivered_once_per_subscription():
    async def main():
        hub = MemoryHub()
        a, b = signed_pair(hub)
        first, second = [], []

        async def one(env):
            first.append(env.id)

        async def two(env):
            second.append(env.id)

        await a.subscribe(SUBJECT, one)
        await a.subscribe(SUBJECT, two)
        env = Envelope("hello", {"n": 1})
        await b.publish(SUBJECT, env)
        await b.publish(SUBJECT, env)  # same id again
        await b.publish(SUBJECT, Envelope("hello", {"n": 2}))
        await settle()

        assert first == second == [env.id, first[1]] and first[1] != env.id
        assert a.duplicates == 2  # one repeat dropped by each subscription
        assert a.rejected == 0

    asyncio.run(main())


def test_a_duplicated_request_runs_its_handler_once_and_gets_the_same_reply():
    async def main():
        hub = MemoryHub()
        hub.faults.duplicate = 1.0  # the hub delivers every message twice
        a, b = signed_pair(hub)
        calls = []

        async def on_run(env):
            calls.append(env.id)
            await asyncio.sleep(0.05)
            return Envelope("result", {"n": len(calls)})

        await a.subscribe("bflow.node.a.run", on_run)
        reply = await b.request("bflow.node.a.run", Envelope("run", {}), timeout=2)
        await settle()
        assert reply.body == {"n": 1} and reply.sender == a.node_id
        assert len(calls) == 1 and a.duplicates == 1

    asyncio.run(main())


def test_the_seen_set_is_bounded():
    async def main():
        hub = MemoryHub()
        a = SignedTransport(MemoryTransport(hub=hub), Identity.generate(), seen_limit=2)
        b = SignedTransport(MemoryTransport(hub=hub), Identity.generate())
        got = []

        async def on(env):
            got.append(env.body["n"])

        await a.subscribe(SUBJECT, on)
        envs = [Envelope("hello", {"n": n}) for n in range(3)]
        for env in envs + [envs[0], envs[2]]:  # 0 was forgotten; 2 was not
            await b.publish(SUBJECT, env)
            await settle()
        assert got == [0, 1, 2, 0]
        assert a.duplicates == 1

    asyncio.run(main())


def test_connect_close_and_node_id_delegate():
    async def main():
        hub = MemoryHub()
        ident = Identity.generate()
        t = SignedTransport(MemoryTransport(hub=hub), ident)
        assert t.node_id == ident.node_id
        await t.connect()

        async def on(env):
            return None

        await t.subscribe(SUBJECT, on)
        assert hub.handlers_for(SUBJECT)
        await t.close()
        assert not hub.handlers_for(SUBJECT)

    asyncio.run(main())


def test_what_arrives_after_an_unsubscribe_is_neither_verified_nor_delivered(monkeypatch):
    """A burst the inner transport had already taken in when the subscription ended (the
    discover answers past a requester's sample) costs no signature check."""
    captured = []

    class Inner(MemoryTransport):
        async def subscribe(self, subject, handler):
            captured.append(handler)  # what the inner transport calls for each envelope
            return await super().subscribe(subject, handler)

    async def main():
        hub = MemoryHub()
        receiver = SignedTransport(Inner(hub=hub), Identity.generate())
        sender = SignedTransport(MemoryTransport(hub=hub), Identity.generate())
        got, opened = [], []
        check = receiver._open
        monkeypatch.setattr(receiver, "_open", lambda *a: opened.append(1) or check(*a))

        async def handler(env):
            got.append(env.body["n"])

        sub = await receiver.subscribe(SUBJECT, handler)
        late = sender._seal(Envelope("hello", {"n": 2}, sender=sender.node_id), SUBJECT)
        await sender.publish(SUBJECT, Envelope("hello", {"n": 1}, sender=sender.node_id))
        await settle()
        await sub.unsubscribe()
        await captured[0](late)  # in flight when it unsubscribed
        return got, opened

    got, opened = asyncio.run(main())
    assert got == [1]
    assert len(opened) == 1
