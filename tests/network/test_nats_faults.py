"""Faults with real parts: a `bflow node` process SIGKILLed mid-shard, and the
nats-server restarted mid-job. The job completes; no output is lost or doubled."""

import os
import signal
import subprocess
import sys

from cli_helpers import bflow, run_in_thread, wait_for_running_shard, write_spec

from bacalhau_flow.network.devstack import Devstack


def start_node(url: str, name: str) -> subprocess.Popen:
    """A `bflow node` process trusting this test session's requester (its $BFLOW_HOME's key)."""
    from bacalhau_flow.network.embedded import client_identity

    proc = subprocess.Popen([sys.executable, "-m", "bacalhau_flow.cli", "node", "--network", url, "--name", name,
                             "--cpu", "1", "--trust", client_identity().node_id],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.node_id = proc.stdout.readline().decode().strip()  # printed once the node has joined
    assert proc.node_id.startswith("n-"), proc.stderr.read().decode()
    return proc


def shards_spec(tmp_path, name: str, count: int, seconds: float):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(count):
        (d / f"f{i}").write_text(f"{i}\n")
    return write_spec(tmp_path, f"pipeline: {name}\ninput: {{url: d, glob: '/*'}}\nretries: 2\nresources: {{cpu: 1}}\n"
                                f"transform: {{cmd: [sh, -c, 'sleep {seconds}; cp $BFLOW_INPUTS/d/* $BFLOW_OUTPUTS/']}}\n")


def test_node_process_killed_mid_shard(tmp_path, nats_server):
    spec = shards_spec(tmp_path, "killed", 3, 3)
    nodes = [start_node(nats_server.url, f"kill-{i}") for i in range(3)]
    try:
        thread, holder = run_in_thread("run", spec, "--network", nats_server.url, "--json")
        victim = wait_for_running_shard("killed")[1].node
        proc = next(p for p in nodes if p.node_id == victim)
        os.kill(proc.pid, signal.SIGKILL)
        thread.join(180)
    finally:
        for p in nodes:
            p.kill()
            p.wait()
    job = holder["r"].json()
    assert job["state"] == "completed", holder["r"].stderr
    assert any(s["attempts"] == 2 for s in job["shards"])
    assert all(s["node"] != victim for s in job["shards"])
    got = tmp_path / "got"
    bflow("get", job["id"], "-o", got)
    assert sorted(p.name for p in (got / "outputs").iterdir()) == ["f0", "f1", "f2"]


def test_nats_server_restarted_mid_job(tmp_path):
    from bacalhau_flow_nats.server import NatsServer

    server = NatsServer().start()
    spec = shards_spec(tmp_path, "restarted", 4, 2)
    try:
        with Devstack(server.url, nodes=2, root=tmp_path / "nodes"):
            thread, holder = run_in_thread("run", spec, "--network", server.url, "--json")
            wait_for_running_shard("restarted")
            server.restart(down_for=1.0)
            thread.join(180)
    finally:
        server.stop()
    job = holder["r"].json()
    assert job["state"] == "completed", holder["r"].stderr
    got = tmp_path / "got"
    bflow("get", job["id"], "-o", got)
    assert sorted(p.name for p in (got / "outputs").iterdir()) == ["f0", "f1", "f2", "f3"]


def test_nats_server_down_longer_than_a_lease_loses_nothing(tmp_path):
    """30 s without a nats-server (five leases) in the middle of a 20-shard job: the
    requester lets no lease run out while it is cut off, the nodes keep running and deliver
    when it is back. Every shard completes, each on its first attempt."""
    from bacalhau_flow_nats.server import NatsServer

    server = NatsServer().start()
    spec = shards_spec(tmp_path, "outage", 20, 1)
    try:
        with Devstack(server.url, nodes=2, root=tmp_path / "nodes"):
            thread, holder = run_in_thread("run", spec, "--network", server.url, "--json")
            wait_for_running_shard("outage")
            server.restart(down_for=30.0)
            thread.join(240)
    finally:
        server.stop()
    job = holder["r"].json()
    assert job["state"] == "completed", holder["r"].stderr
    assert [s["attempts"] for s in job["shards"]] == [1] * 20
    got = tmp_path / "got"
    bflow("get", job["id"], "-o", got)
    assert sorted(p.name for p in (got / "outputs").iterdir()) == sorted(f"f{i}" for i in range(20))


def test_two_networks_joined_as_leaf_run_each_others_jobs(tmp_path):
    """A devstack joined to another with `--join` (its nats-server a leaf of the other's):
    `bflow nodes` on either side lists both sides' nodes, and a job sent to one side with a
    selector only the other side's nodes match completes there."""
    from bacalhau_flow_nats.server import NatsServer

    hub = NatsServer(leaf_port=0).start()
    leaf = NatsServer(leaf_remotes=[hub.leaf_url]).start()
    try:
        leaf.wait_for_leaves(1)
        with Devstack(hub.url, nodes=1, root=tmp_path / "a", labels=[{"side": "a"}]) as a, \
                Devstack(leaf.url, nodes=1, root=tmp_path / "b", labels=[{"side": "b"}]) as b:
            both = {a.nodes[0].id, b.nodes[0].id}
            for url in (hub.url, leaf.url):
                listed = bflow("nodes", "--network", url, "--json").json()
                assert both <= {n["id"] for n in listed}
            d = tmp_path / "d"
            d.mkdir()
            (d / "x.txt").write_text("x\n")
            spec = write_spec(tmp_path, "pipeline: far\ninput: {url: d, glob: '/*'}\nselector: {side: b}\n"
                                        "transform: {cmd: [sh, -c, 'cp $BFLOW_INPUTS/d/* $BFLOW_OUTPUTS/']}\n")
            job = bflow("run", spec, "--network", hub.url, "--json").json()
    finally:
        leaf.stop()
        hub.stop()
    assert job["state"] == "completed"
    assert job["shards"][0]["node"] == b.nodes[0].id


def test_join_to_a_url_that_does_not_answer_is_a_clear_error(tmp_path):
    done = bflow("devstack", "--nodes", "1", "--join", "nats://127.0.0.1:1")
    assert done.code != 0
    assert "--join nats://127.0.0.1:1: no nats-server answered" in done.stderr
    assert "Traceback" not in done.stderr
