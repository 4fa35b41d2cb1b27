"""Faults with real parts: a `bflow node` process SIGKILLed mid-shard, and the
nats-server restarted mid-job. The job completes; no output is lost or doubled."""

import os
import signal
import subprocess
import sys

from cli_helpers import bflow, run_in_thread, wait_for_running_shard, write_spec

from bacalhau_flow.network.devstack import Devstack


def start_node(url: str, name: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "bacalhau_flow.cli", "node", "--network", url, "--name", name,
                             "--cpu", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
