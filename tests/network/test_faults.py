"""Faults on the memory transport: lost nodes, lost and repeated messages, forgeries,
capacity limits. Nothing is lost, nothing runs twice at once, no output is doubled."""

import time
import uuid

from cli_helpers import bflow, run_in_thread, wait_for_running_shard, write_spec

from bacalhau_flow.home import jobs_db
from bacalhau_flow.jobs.store import JobStore
from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.network.messages import Capacity
from bacalhau_flow.transports.memory import Faults, MemoryHub


def data_dir(tmp_path, n=6):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(n):
        (d / f"f{i}").write_text(f"{i}\n")
    return d


def test_a_node_lost_mid_shard_is_replaced_and_nothing_is_lost_or_doubled(tmp_path):
    url = f"memory://lost-{uuid.uuid4().hex[:6]}"
    data_dir(tmp_path, 3)
    spec = write_spec(tmp_path, "pipeline: survive\ninput: {url: d, glob: '/*'}\nretries: 2\n"
                                "resources: {cpu: 1}\n"
                                "transform: {cmd: [sh, -c, 'sleep 2; cp $BFLOW_INPUTS/d/* $BFLOW_OUTPUTS/']}\n")
    with Devstack(url, nodes=3, root=tmp_path / "nodes", capacity=Capacity(cpu=1, memory=2**30, disk=2**34)) as stack:
        thread, holder = run_in_thread("run", spec, "--network", url, "--json")
        victim = wait_for_running_shard("survive")[1].node
        stack.kill(next(i for i, n in enumerate(stack.nodes) if n.id == victim))
        thread.join(120)
    job = holder["r"].json()
    assert job["state"] == "completed", holder["r"].stderr
    moved = [s for s in job["shards"] if s["attempts"] == 2]
    assert moved and all(s["node"] != victim for s in moved)
    got = tmp_path / "got"
    bflow("get", job["id"], "-o", got)
    assert sorted(p.name for p in (got / "outputs").iterdir()) == ["f0", "f1", "f2"]
    attempts = JobStore(jobs_db()).attempts(job["id"], moved[0]["index"])
    assert attempts[0]["node"] == victim and "lost node" in attempts[0]["error"]


def test_dropped_and_duplicated_messages_still_give_every_output_once(tmp_path):
    url = f"memory://lossy-{uuid.uuid4().hex[:6]}"
    data_dir(tmp_path, 8)
    spec = write_spec(tmp_path, "pipeline: lossy\ninput: {url: d, glob: '/*'}\nretries: 3\n"
                                "transform: {cmd: [sh, -c, 'cp $BFLOW_INPUTS/d/* $BFLOW_OUTPUTS/; echo ran >> "
                                f"{tmp_path}/runs-$BFLOW_SHARD_INDEX']}}\n")
    with Devstack(url, nodes=3, root=tmp_path / "nodes"):
        MemoryHub.named(url.removeprefix("memory://")).faults = Faults(drop=0.05, duplicate=0.3, seed=7)
        r = bflow("run", spec, "--network", url, "--json")
    job = r.json()
    assert job["state"] == "completed", r.stderr
    got = tmp_path / "got"
    bflow("get", job["id"], "-o", got)
    assert sorted(p.name for p in (got / "outputs").iterdir()) == [f"f{i}" for i in range(8)]
    for shard in job["shards"]:  # a duplicated accept never ran an attempt twice
        assert len((tmp_path / f"runs-{shard['index']}").read_text().splitlines()) == shard["attempts"]


def test_six_one_cpu_shards_on_two_one_cpu_nodes_queue_and_all_complete(tmp_path):
    url = f"memory://queue-{uuid.uuid4().hex[:6]}"
    data_dir(tmp_path, 6)
    log = tmp_path / "spans"
    spec = write_spec(tmp_path, "pipeline: queued\ninput: {url: d, glob: '/*'}\nresources: {cpu: 1}\n"
                                "transform: {cmd: [sh, -c, 'echo \"$(date +%s.%N) start\" >> "
                                f"{log}; sleep 0.5; echo \"$(date +%s.%N) end\" >> {log}']}}\n")
    with Devstack(url, nodes=2, root=tmp_path / "nodes", capacity=Capacity(cpu=1, memory=2**30, disk=2**34)):
        r = bflow("run", spec, "--network", url, "--json")
    assert r.code == 0, r.stderr
    events = sorted((float(t), kind) for t, kind in (line.split() for line in log.read_text().splitlines()))
    running, most = 0, 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        most = max(most, running)
    assert most <= 2 and len(events) == 12


def test_a_forged_result_is_rejected(tmp_path):
    import asyncio

    from bacalhau_flow.network import protocol as p
    from bacalhau_flow.network.identity import Identity
    from bacalhau_flow.network.messages import ShardResult
    from bacalhau_flow.network.requester import Requester
    from bacalhau_flow.storage import ContentStore
    from bacalhau_flow.transports.base import Envelope
    from bacalhau_flow.transports.memory import MemoryTransport
    from bacalhau_flow.transports.signing import SignedTransport

    async def scenario():
        hub = MemoryHub()
        requester = Requester(SignedTransport(MemoryTransport(hub=hub), Identity.generate()),
                              ContentStore(tmp_path / "store"))
        await requester.start(expect_nodes=0, wait=0)
        forger = MemoryTransport(hub=hub)
        fake = ShardResult(job_id="j-1", shard_index=0, shard_id="s", attempt=1, node="n-victim", state="completed")
        future = asyncio.get_running_loop().create_future()
        requester._waiting["j-1/0/1"] = (future, [time.monotonic() + 60])
        try:
            await forger.request(p.requester_subject(requester.id, "result"),
                                 Envelope("shard_result", fake.model_dump(), sender="n-victim"), 0.5)
        except Exception:
            pass
        return future.done(), requester.transport.rejected

    done, rejected = asyncio.run(scenario())
    assert not done and rejected == 1
