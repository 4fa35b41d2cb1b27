"""Many nodes: a devstack of thousands over several processes on one nats-server, listed
whole by `bflow nodes`, running a job; idle traffic that does not grow with the network per
node; placement that looks at a bounded sample however large the network."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from urllib.error import HTTPError

import pytest
from cli_helpers import bflow, write_spec

from bacalhau_flow.network import protocol as p
from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.network.identity import Identity
from bacalhau_flow.network.messages import Capacity, InputRef, NodeInfo, ShardRequest, TransformRef
from bacalhau_flow.network.placement import SAMPLE
from bacalhau_flow.network.requester import Requester
from bacalhau_flow.storage import ContentStore
from bacalhau_flow.testing.requires import import_or_skip
from bacalhau_flow.transports import transport_for
from bacalhau_flow.transports.base import Envelope
from bacalhau_flow.transports.memory import MemoryTransport
from bacalhau_flow.transports.signing import SignedTransport

SMALL = Capacity(cpu=1, memory=2**30, disk=2**30)


def _nats():
    return import_or_skip("bacalhau_flow_nats.server", "the NATS plugin", "bash scripts/setup.sh installs it")


def _shard_spec(tmp_path, name: str, shards: int):
    data = tmp_path / "d"
    data.mkdir()
    for i in range(shards):
        (data / f"f{i}").write_text(f"{i}\n")
    return write_spec(tmp_path, f"pipeline: {name}\ninput: {{url: d, glob: '/*'}}\n"
                                "resources: {cpu: 0.01, memory: 1Mi, disk: 1Mi}\n"
                                "transform: {cmd: [sh, -c, 'cp $BFLOW_INPUTS/d/* $BFLOW_OUTPUTS/']}\n")


def test_placement_ranks_a_bounded_sample_of_a_large_network(tmp_path):
    requester = Requester(MemoryTransport(f"memory://sample-{uuid.uuid4().hex[:6]}"), ContentStore(tmp_path / "s"))
    labelled = set()
    for i in range(2000):
        labels = {"zone": "b"} if i % 500 == 0 else {}
        info = NodeInfo(id=f"n-{i:05}", version="x", executors=["local"], labels=labels, total=SMALL, free=SMALL)
        asyncio.run(requester._on_announce(Envelope("node_info", info.model_dump(), sender=info.id)))
        if labels:
            labelled.add(info.id)
    request = ShardRequest(job_id="j", pipeline="p", shard_index=0, shard_id="s", shard_count=1,
                           inputs=[InputRef(name="d", url="/d")], datums=[{"d": ["/x"]}],
                           transform=TransformRef(cmd=["true"]))
    ranked = requester.candidates(request, {}, set())
    assert len(ranked) == SAMPLE and len(set(ranked)) == SAMPLE
    assert set(requester.candidates(request, {"zone": "b"}, set())) == labelled  # rare nodes are still found
    requester._live.clear()  # every node dropped (no bids answered)
    with pytest.raises(Exception, match="no compute node is reachable"):
        requester.candidates(request, {}, set())


def test_nodes_answer_a_discover_on_the_askers_own_subject_and_idle_traffic_is_low(tmp_path):
    server = _nats().NatsServer().start()
    try:
        with Devstack(server.url, 150, root=tmp_path / "nodes", capacity=SMALL, shared=True) as stack:
            async def listen():
                transport = SignedTransport(transport_for(server.url), Identity.generate())
                await transport.connect()
                common, own = [], []
                me = p.requester_subject(transport.node_id, "info")
                await transport.subscribe(p.ANNOUNCE, lambda e: _append(common, e))
                await transport.subscribe(me, lambda e: _append(own, e))
                await asyncio.sleep(1.0)  # the nodes' start-up announcements are over
                common.clear()
                body = {"reply": me, "spread": 0.5}
                await transport.publish(p.DISCOVER, Envelope("discover", body, sender=transport.node_id))
                await asyncio.sleep(6.0)
                await transport.close()
                return common, own

            common, own = stack.call(listen(), timeout=60)
            assert len({e.sender for e in own}) == 150  # every node answered the asker alone
            # 150 nodes for 6 s: announcing every 2 s as before would be ~450 messages
            assert len(common) < 0.1 * 150 * 6

            # one gateway serves every node's store under /n/<node id>/
            node = stack.nodes[7]
            cid = node.store.put_bytes(b"held by node 7\n")
            with urllib.request.urlopen(f"{node.gateway}/ipfs/{cid}", timeout=10) as r:
                assert r.read() == b"held by node 7\n"
            with pytest.raises(HTTPError) as missing:
                urllib.request.urlopen(f"{stack.nodes[8].gateway}/ipfs/{cid}", timeout=10)
            assert missing.value.code == 404
    finally:
        server.stop()


async def _append(into: list, envelope: Envelope) -> None:
    into.append(envelope)


def test_five_thousand_nodes_over_four_processes_are_listed_and_run_a_job(tmp_path):
    _nats()
    env = dict(os.environ, BFLOW_HOME=os.environ["BFLOW_HOME"])
    devstack = subprocess.Popen([sys.executable, "-m", "bacalhau_flow.cli", "devstack", "--nodes", "5000",
                                 "--processes", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, start_new_session=True)
    try:
        url = devstack.stdout.readline().strip()  # printed once every node is on the network
        assert url.startswith("nats://"), devstack.stderr.read() if devstack.poll() is not None else url
        listed = bflow("nodes", "--network", url, "--json", "--wait", "60")
        assert listed.code == 0, listed.stderr
        nodes = json.loads(listed.stdout)
        assert len(nodes) == 5000 and len({n["id"] for n in nodes}) == 5000
        assert len({n["gateway"].split("/n/")[0] for n in nodes}) == 4  # one gateway per process
        r = bflow("run", _shard_spec(tmp_path, "five-thousand", 100), "--network", url, "--json")
        job = r.json()
        assert job["state"] == "completed", r.stderr
        assert len({s["node"] for s in job["shards"]}) > 10  # spread over the network, not a few nodes
    finally:
        devstack.send_signal(signal.SIGTERM)
        try:
            devstack.wait(180)
        except subprocess.TimeoutExpired:
            os.killpg(devstack.pid, signal.SIGKILL)
            raise
    assert devstack.returncode == 0
    started = time.monotonic()
    while any(os.scandir(os.path.join(os.environ["BFLOW_HOME"], "devstack"))) and time.monotonic() - started < 10:
        time.sleep(0.2)
    assert not any(os.scandir(os.path.join(os.environ["BFLOW_HOME"], "devstack")))  # no folder left behind
