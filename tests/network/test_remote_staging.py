"""Blocks between machines on a real nats-server, when a gateway cannot be reached: a node
whose advertised gateway nobody can reach still gets its outputs collected (over the
transport), and a requester whose own gateway is unreachable fails the shard, naming it."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time

import pytest

from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.network.identity import Identity
from bacalhau_flow.network.messages import InputRef, ShardRequest, TransformRef
from bacalhau_flow.network.requester import Requester
from bacalhau_flow.storage import ContentStore
from bacalhau_flow.storage.gateway import Gateway
from bacalhau_flow.transports import transport_for
from bacalhau_flow.transports.signing import SignedTransport

pull_module = importlib.import_module("bacalhau_flow.storage.pull")  # the module, not the function
NOWHERE = "192.0.2.1"  # TEST-NET-1: never routed, so a connection there never completes
CMD = "cat $BFLOW_INPUTS/in/a.txt; tr a-z A-Z < $BFLOW_INPUTS/in/a.txt > $BFLOW_OUTPUTS/A.txt"


@pytest.fixture(autouse=True)
def quick_connect(monkeypatch):
    monkeypatch.setattr(pull_module, "CONNECT_TIMEOUT_S", 1.0)


def shard(src) -> ShardRequest:
    return ShardRequest(job_id="j-remote", pipeline="p", shard_index=0, shard_id="s", shard_count=1,
                        transform=TransformRef(cmd=["sh", "-c", CMD]), inputs=[InputRef(name="in", url=str(src))],
                        datums=[{"in": ["/a.txt"]}])


async def run_shard(url: str, store: ContentStore, request: ShardRequest, gateway: str | None):
    """One attempt through a Requester of its own on `url`; `gateway`: "serve" (a real one for
    `store`), or the URL to claim as its own."""
    transport = SignedTransport(transport_for(url), Identity.generate())
    await transport.connect()
    requester = Requester(transport, store)
    served = None
    try:
        if gateway == "serve":
            served = Gateway(store)
            requester.gateway = await served.start()
        else:
            requester.gateway = gateway
        await requester.start(expect_nodes=1, wait=10)
        started = time.monotonic()
        result = await asyncio.wait_for(requester.run(request), 60)
        return result, time.monotonic() - started, requester
    finally:
        await requester.stop()
        if served is not None:
            await served.stop()
        await transport.close()


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.txt").write_text("hello\n")
    return d


def test_a_node_gateway_nobody_reaches_falls_back_to_the_transport(nats_server, tmp_path, src, caplog):
    store = ContentStore(tmp_path / "requester")
    caplog.set_level(logging.INFO, logger="bacalhau_flow.requester")
    with Devstack(nats_server.url, nodes=1, root=tmp_path / "nodes", advertise=NOWHERE) as stack:
        assert stack.gateways[0].startswith(f"http://{NOWHERE}:")
        result, _, requester = asyncio.run(run_shard(nats_server.url, store, shard(src), "serve"))
    assert requester.nodes[stack.nodes[0].id].gateway == stack.gateways[0]
    assert result.state == "completed", result.error
    assert store.cat(result.stdout_cid) == b"hello\n"
    assert [(e.name, store.cat(e.cid)) for e in store.ls(result.outputs_cid)] == [("A.txt", b"HELLO\n")]
    assert any(NOWHERE in r.getMessage() and "asking over the network" in r.getMessage() for r in caplog.records)


def test_a_requester_gateway_that_is_unreachable_fails_the_shard_naming_it(nats_server, tmp_path, src):
    store = ContentStore(tmp_path / "requester")
    with Devstack(nats_server.url, nodes=1, root=tmp_path / "nodes"):
        result, took, _ = asyncio.run(run_shard(nats_server.url, store, shard(src), "http://127.0.0.1:1"))
    assert result.state == "failed"
    assert "http://127.0.0.1:1" in result.error and "cannot stage input 'in' path /a.txt" in result.error, result.error
    assert took < 10
    assert "http://127.0.0.1:1" in store.cat(result.stderr_cid).decode()  # the node's log says so too
