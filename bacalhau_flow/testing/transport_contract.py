"""The contract every Transport backend keeps, as a reusable pytest suite.

A backend's tests inherit `TransportContract` and supply one fixture, `make_transport`:
an async factory that returns a new, connected transport on the same network as every
other transport it returned during the test (two connections to one hub, one server or
one cluster). Each test opens the connections it needs, and closes them at its end:

    class TestMyTransport(TransportContract):
        @pytest.fixture
        def make_transport(self, my_server):
            async def make():
                t = MyTransport(my_server.url)
                await t.connect()
                return t
            return make

Known failures of a backend go in `known_failures` ({test name: reason}); they are
marked as strict xfails, so a fix shows up as an XPASS to remove from the table.
Timing knobs (`timeout`, `deadline`, `settle`) are class attributes a slow backend
may raise. The tests are plain sync functions that run each scenario in `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Awaitable, Callable

import pytest

from ..transports.base import Envelope, NoResponders, RequestTimeout, Transport, TransportError

MakeTransport = Callable[[], Awaitable[Transport]]


class Inbox:
    """A subscription handler that keeps what it receives, and can answer requests."""

    def __init__(self, reply: Callable[[Envelope], Envelope | None] | None = None):
        self.got: list[Envelope] = []
        self.reply = reply

    async def __call__(self, envelope: Envelope) -> Envelope | None:
        self.got.append(envelope)
        return self.reply(envelope) if self.reply else None

    async def wait_for(self, count: int, deadline: float) -> list[Envelope]:
        """Wait until `count` envelopes have come; fail the test after `deadline` seconds."""
        end = time.monotonic() + deadline
        while len(self.got) < count:
            if time.monotonic() > end:
                pytest.fail(f"expected {count} deliveries within {deadline:g}s, got {len(self.got)}: {self.bodies()}")
            await asyncio.sleep(0.005)
        return self.got

    def bodies(self) -> list[dict]:
        return [e.body for e in self.got]


class Network:
    """The transports of one test: opened through `make_transport`, closed at the end."""

    def __init__(self, make_transport: MakeTransport):
        self._make = make_transport
        self.transports: list[Transport] = []
        # Subjects are unique to the test, so tests sharing a server never hear each other.
        self.prefix = "contract" + uuid.uuid4().hex[:12]

    async def connect(self) -> Transport:
        transport = await self._make()
        self.transports.append(transport)
        return transport

    def subject(self, *words: str) -> str:
        return ".".join((self.prefix, *words))

    async def close(self) -> None:
        for transport in self.transports:
            try:
                await transport.close()
            except Exception:  # noqa: BLE001 - a second close must not hide the test's own failure
                pass


def _never() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()


class TransportContract:
    """Inherit, supply the `make_transport` fixture, and every test below runs on your backend."""

    timeout = 1.0  # seconds a request waits in the tests that expect a timeout
    deadline = 5.0  # seconds an expected delivery or reply may take
    settle = 0.3  # seconds to wait before concluding that something was not delivered
    known_failures: dict[str, str] = {}

    @pytest.fixture(autouse=True)
    def _mark_known_failures(self, request):
        reason = self.known_failures.get(getattr(request.node, "originalname", None) or request.node.name)
        if reason:
            request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))

    def play(self, make_transport: MakeTransport, scenario: Callable[[Network], Awaitable[None]]) -> None:
        """Run `scenario(network)` in a fresh event loop, closing every transport afterwards."""

        async def main() -> None:
            net = Network(make_transport)
            try:
                await asyncio.wait_for(scenario(net), 60)
            finally:
                await net.close()

        asyncio.run(main())

    async def barrier(self, net: Network, sender: Transport, receiver: Transport) -> None:
        """Publish a marker from `sender` to `receiver` and wait for it: whatever `sender`
        published before has had its chance to arrive. Then wait `settle` to be sure."""
        marker = Inbox()
        subject = net.subject("barrier", uuid.uuid4().hex[:8])
        sub = await receiver.subscribe(subject, marker)
        await sender.publish(subject, Envelope("marker", {}))
        await marker.wait_for(1, self.deadline)
        await sub.unsubscribe()
        await asyncio.sleep(self.settle)

    # -- publish / subscribe ------------------------------------------------------
    def test_publish_reaches_every_subscriber(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("announce")
            on_a, also_on_a, on_b = Inbox(), Inbox(lambda e: Envelope("ignored", {})), Inbox()
            await a.subscribe(subject, on_a)
            await a.subscribe(subject, also_on_a)  # a returned envelope is ignored for a publish
            await b.subscribe(subject, on_b)
            sent = Envelope("node_info", {"n": 1, "labels": {"zone": "a"}}, sender="node-1")
            await a.publish(subject, sent)
            await b.publish(subject, Envelope("node_info", {"n": 2}, sender="node-2"))
            for inbox in (on_a, also_on_a, on_b):
                await inbox.wait_for(2, self.deadline)
                assert sorted(e.body["n"] for e in inbox.got) == [1, 2]
                first = next(e for e in inbox.got if e.body["n"] == 1)
                assert (first.kind, first.body, first.sender, first.id) == (sent.kind, sent.body, sent.sender, sent.id)
                assert first.sent == pytest.approx(sent.sent)
            await self.barrier(net, a, b)
            assert len(on_b.got) == 2, "a publish was delivered more than once"

        self.play(make_transport, scenario)

    def test_publish_with_nobody_listening_is_fine(self, make_transport):
        async def scenario(net: Network):
            a = await net.connect()
            for n in range(3):
                await a.publish(net.subject("nobody", "home"), Envelope("hello", {"n": n}))
            # and the connection still works afterwards
            inbox = Inbox()
            await a.subscribe(net.subject("after"), inbox)
            await a.publish(net.subject("after"), Envelope("hello", {}))
            await inbox.wait_for(1, self.deadline)

        self.play(make_transport, scenario)

    def test_wildcard_matches_exactly_one_more_word(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            wild, exact = Inbox(), Inbox()
            await b.subscribe(net.subject("node", "*"), wild)
            await b.subscribe(net.subject("node", "n1"), exact)
            for words, tag in [
                (("node", "n1"), "n1"),
                (("node", "n2"), "n2"),
                (("node",), "bare"),  # no word after `node`: no match
                (("node", "n1", "run"), "deeper"),  # two more words: no match
                (("other", "n1"), "other"),
            ]:
                await a.publish(net.subject(*words), Envelope("hello", {"tag": tag}))
            await wild.wait_for(2, self.deadline)
            await self.barrier(net, a, b)
            assert sorted(body["tag"] for body in wild.bodies()) == ["n1", "n2"]
            assert exact.bodies() == [{"tag": "n1"}]

        self.play(make_transport, scenario)

    def test_wildcard_subscriber_answers_requests(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            await b.subscribe(net.subject("svc", "*"), Inbox(lambda e: Envelope("ok", {"x": e.body["x"]})))
            reply = await a.request(net.subject("svc", "any"), Envelope("ask", {"x": 7}), self.deadline)
            assert reply.body == {"x": 7}

        self.play(make_transport, scenario)

    def test_unsubscribe_stops_delivery(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("topic")
            gone, stays = Inbox(), Inbox()
            sub = await b.subscribe(subject, gone)
            await b.subscribe(subject, stays)
            await a.publish(subject, Envelope("hello", {"n": 1}))
            await gone.wait_for(1, self.deadline)
            await sub.unsubscribe()
            await a.publish(subject, Envelope("hello", {"n": 2}))
            await stays.wait_for(2, self.deadline)
            await self.barrier(net, a, b)
            assert gone.bodies() == [{"n": 1}]
            await sub.unsubscribe()  # a second unsubscribe is harmless

        self.play(make_transport, scenario)

    # -- request / reply ----------------------------------------------------------
    def test_request_reply_round_trip_keeps_the_envelope(self, make_transport):
        async def scenario(net: Network):
            requester, server = await net.connect(), await net.connect()
            subject = net.subject("node", "n1", "run")
            body = {"text": "héllo ✓", "n": 3, "f": 0.25, "ok": True, "none": None, "list": [1, "two", {"three": 3}]}
            asked = Envelope("shard_request", body, sender="requester-1", id="req-42")

            def answer(e: Envelope) -> Envelope:
                return Envelope("shard_result", {"echo": e.body, "asked_id": e.id}, sender="node-1", id="rep-42")

            inbox = Inbox(answer)
            await server.subscribe(subject, inbox)
            reply = await requester.request(subject, asked, self.deadline)

            got = inbox.got[0]
            assert (got.kind, got.body, got.sender, got.id) == ("shard_request", body, "requester-1", "req-42")
            assert got.sent == pytest.approx(asked.sent)
            assert isinstance(reply, Envelope)
            assert (reply.kind, reply.sender, reply.id) == ("shard_result", "node-1", "rep-42")
            assert reply.body == {"echo": body, "asked_id": "req-42"}
            # a handler on the requester's own connection answers too
            await requester.subscribe(net.subject("self"), Inbox(lambda e: Envelope("me", {})))
            assert (await requester.request(net.subject("self"), Envelope("ask", {}), self.deadline)).kind == "me"

        self.play(make_transport, scenario)

    def test_request_to_nobody_raises_no_responders_quickly(self, make_transport):
        async def scenario(net: Network):
            a = await net.connect()
            started = time.monotonic()
            with pytest.raises(NoResponders):
                await a.request(net.subject("node", "gone", "run"), Envelope("ask", {}), timeout=10)
            assert time.monotonic() - started < 2.0, "NoResponders should not wait for the timeout"

        self.play(make_transport, scenario)

    def test_request_after_unsubscribe_raises_no_responders(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("node", "n1", "run")
            sub = await b.subscribe(subject, Inbox(lambda e: Envelope("ok", {})))
            assert (await a.request(subject, Envelope("ask", {}), self.deadline)).kind == "ok"
            await sub.unsubscribe()
            await asyncio.sleep(self.settle)  # a cluster needs a moment to forget the interest
            with pytest.raises(NoResponders):
                await a.request(subject, Envelope("ask", {}), timeout=10)

        self.play(make_transport, scenario)

    def test_request_without_reply_times_out(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("stuck")

            async def never_answers(e: Envelope) -> Envelope:
                await _never()
                raise AssertionError("unreachable")

            await b.subscribe(subject, never_answers)
            started = time.monotonic()
            with pytest.raises(RequestTimeout):
                await a.request(subject, Envelope("ask", {}), timeout=self.timeout)
            took = time.monotonic() - started
            assert self.timeout * 0.8 <= took < self.timeout + 2.0, f"timed out after {took:.2f}s"

        self.play(make_transport, scenario)

    def test_slow_handler_does_not_hold_up_other_requests(self, make_transport):
        """A node's run handler may take minutes; meanwhile it must answer other requests."""

        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("node", "n1", "run")

            async def handler(e: Envelope) -> Envelope:
                if e.body.get("slow"):
                    await _never()
                return Envelope("done", {"n": e.body["n"]})

            await b.subscribe(subject, handler)
            slow = asyncio.ensure_future(a.request(subject, Envelope("ask", {"slow": True, "n": 0}), 30))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            reply = await a.request(subject, Envelope("ask", {"n": 1}), self.deadline)
            assert reply.body == {"n": 1} and time.monotonic() - started < 2.0
            assert not slow.done()
            slow.cancel()

        self.play(make_transport, scenario)

    def test_handler_exception_keeps_the_subscription(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("fragile")

            async def handler(e: Envelope) -> Envelope:
                if e.body.get("boom"):
                    raise RuntimeError("handler blew up")
                return Envelope("ok", {"n": e.body["n"]})

            await b.subscribe(subject, handler)
            started = time.monotonic()
            with pytest.raises(TransportError):
                await a.request(subject, Envelope("ask", {"boom": True}), timeout=self.timeout)
            assert time.monotonic() - started < self.timeout + 2.0
            assert (await a.request(subject, Envelope("ask", {"n": 2}), self.deadline)).body == {"n": 2}
            # published messages that blow up the handler do not stop it either
            await a.publish(subject, Envelope("hello", {"boom": True}))
            assert (await a.request(subject, Envelope("ask", {"n": 3}), self.deadline)).body == {"n": 3}

        self.play(make_transport, scenario)

    def test_reply_that_is_not_json_fails_the_request_not_the_subscription(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("bad-reply")

            def answer(e: Envelope) -> Envelope:
                return Envelope("oops", {"x": object()} if e.body.get("bad") else {"x": 1})

            await b.subscribe(subject, Inbox(answer))
            with pytest.raises(TransportError):
                await a.request(subject, Envelope("ask", {"bad": True}), timeout=self.timeout)
            assert (await a.request(subject, Envelope("ask", {}), self.deadline)).body == {"x": 1}

        self.play(make_transport, scenario)

    def test_handler_returning_nothing_to_a_request_fails_it(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("silent")
            await b.subscribe(subject, Inbox())  # returns None
            started = time.monotonic()
            with pytest.raises(TransportError):  # NoResponders at once, or RequestTimeout
                await a.request(subject, Envelope("ask", {}), timeout=self.timeout)
            assert time.monotonic() - started < self.timeout + 2.0

        self.play(make_transport, scenario)

    def test_many_concurrent_requests_are_all_answered_correctly(self, make_transport):
        async def scenario(net: Network):
            server, r1, r2 = await net.connect(), await net.connect(), await net.connect()
            subject = net.subject("node", "n1", "run")

            async def handler(e: Envelope) -> Envelope:
                await asyncio.sleep(0.001 * (e.body["n"] % 7))  # answer out of order
                return Envelope("result", {"n": e.body["n"], "double": e.body["n"] * 2}, sender=e.id)

            await server.subscribe(subject, handler)
            asks = [Envelope("ask", {"n": n}) for n in range(200)]
            replies = await asyncio.gather(
                *((r1 if n % 2 else r2).request(subject, ask, self.deadline * 2) for n, ask in enumerate(asks))
            )
            for ask, reply in zip(asks, replies):
                assert reply.body == {"n": ask.body["n"], "double": ask.body["n"] * 2}
                assert reply.sender == ask.id

        self.play(make_transport, scenario)

    def test_large_envelope_round_trip(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("big")
            await b.subscribe(subject, Inbox(lambda e: Envelope("ok", {"len": len(e.body["datums"])})))
            datums = [f"/inputs/dir{n // 100}/file-{n:06d}.csv" for n in range(8000)]  # about 300 KB
            reply = await a.request(subject, Envelope("ask", {"datums": datums}), self.deadline)
            assert reply.body == {"len": 8000}

        self.play(make_transport, scenario)

    # -- close ----------------------------------------------------------------------
    def test_close_makes_later_calls_raise(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("x")
            await b.subscribe(subject, Inbox(lambda e: Envelope("ok", {})))
            await a.close()
            with pytest.raises(TransportError):
                await a.publish(subject, Envelope("hello", {}))
            with pytest.raises(TransportError):
                await a.subscribe(subject, Inbox())
            with pytest.raises(TransportError):
                await a.request(subject, Envelope("ask", {}), timeout=self.timeout)
            await a.close()  # closing twice is harmless

        self.play(make_transport, scenario)

    def test_close_fails_pending_requests(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("stuck")
            inbox = Inbox()

            async def never_answers(e: Envelope) -> Envelope:
                await inbox(e)
                await _never()
                raise AssertionError("unreachable")

            await b.subscribe(subject, never_answers)
            pending = asyncio.ensure_future(a.request(subject, Envelope("ask", {}), timeout=30))
            await inbox.wait_for(1, self.deadline)
            await a.close()
            with pytest.raises(TransportError):
                try:
                    await asyncio.wait_for(pending, 3)
                except asyncio.TimeoutError:
                    pytest.fail("a pending request still waits after close()")

        self.play(make_transport, scenario)

    def test_close_ends_the_subscriptions_of_that_connection(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("node", "n1", "run")
            inbox = Inbox(lambda e: Envelope("ok", {}))
            await b.subscribe(subject, inbox)
            await a.request(subject, Envelope("ask", {}), self.deadline)
            await b.close()
            await asyncio.sleep(self.settle)
            await a.publish(subject, Envelope("hello", {}))
            with pytest.raises(NoResponders):
                await a.request(subject, Envelope("ask", {}), timeout=10)
            await asyncio.sleep(self.settle)
            assert len(inbox.got) == 1

        self.play(make_transport, scenario)

    # -- only JSON crosses --------------------------------------------------------
    def test_only_json_crosses(self, make_transport):
        async def scenario(net: Network):
            a, b = await net.connect(), await net.connect()
            subject = net.subject("json")
            inbox = Inbox(lambda e: Envelope("ok", {}))
            await b.subscribe(subject, inbox)
            bad = Envelope("bad", {"thing": object()})
            with pytest.raises((TypeError, ValueError)):
                bad.encode()
            with pytest.raises((TypeError, ValueError, TransportError)):
                await a.publish(subject, bad)
            with pytest.raises((TypeError, ValueError, TransportError)):
                await a.request(subject, bad, timeout=self.timeout)
            # what arrives is what JSON can carry: tuples come back as lists
            await a.publish(subject, Envelope("ok", {"pair": (1, 2)}))
            await inbox.wait_for(1, self.deadline)
            await self.barrier(net, a, b)
            assert inbox.bodies() == [{"pair": [1, 2]}], "a body that is not JSON was delivered"

        self.play(make_transport, scenario)

    def test_non_finite_numbers_are_not_json(self):
        for value in (math.nan, math.inf, -math.inf):
            with pytest.raises(ValueError):
                Envelope("bad", {"x": value}).encode()
