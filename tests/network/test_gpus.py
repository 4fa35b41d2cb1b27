"""GPUs: a node offers a configured inventory (a fake one here: this machine has none),
bids for `gpu: N` shards only when N are free, and gives each shard exactly its devices."""

import uuid

from cli_helpers import bflow, write_spec

from bacalhau_flow.network.capacity import CapacityManager, detect_gpus
from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.network.messages import Capacity, ResourceAsk


def test_capacity_hands_out_distinct_gpu_indices_and_takes_them_back():
    import asyncio

    async def scenario():
        manager = CapacityManager(Capacity(cpu=8, memory=2**30, disk=2**30, gpu=3))
        ask = ResourceAsk(cpu=1, memory=1, disk=1, gpu=2)
        first = await manager.reserve(ask)
        waiting = asyncio.ensure_future(manager.reserve(ask))  # only 1 GPU left: waits
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await manager.release(ask, first)
        second = await asyncio.wait_for(waiting, 1)
        return first, second, manager.free_gpus

    first, second, left = asyncio.run(scenario())
    assert (first, second, left) == ([0, 1], [0, 1], [2])


def test_gpu_shards_each_see_only_their_devices_and_never_share_one(tmp_path):
    url = f"memory://gpu-{uuid.uuid4().hex[:6]}"
    d = tmp_path / "d"
    d.mkdir()
    for i in range(4):
        (d / f"f{i}").write_text(str(i))
    log = tmp_path / "spans"
    spec = write_spec(tmp_path, "pipeline: gpus\ninput: {url: d, glob: '/*'}\nresources: {cpu: 0.5, gpu: 1}\n"
                                "transform: {cmd: [sh, -c, 'echo \"$(date +%s.%N) start $CUDA_VISIBLE_DEVICES\" >> "
                                f"{log}; sleep 0.5; echo \"$(date +%s.%N) end $CUDA_VISIBLE_DEVICES\" >> {log}']}}\n")
    inventory = Capacity(cpu=4, memory=2**30, disk=2**34, gpu=2)
    with Devstack(url, nodes=1, root=tmp_path / "nodes", capacity=inventory):
        r = bflow("run", spec, "--network", url, "--json")
    assert r.code == 0, r.stderr
    events = sorted((float(t), kind, dev) for t, kind, dev in (line.split() for line in log.read_text().splitlines()))
    assert {dev for _, _, dev in events} <= {"0", "1"}
    holding: set[str] = set()
    for _, kind, dev in events:
        if kind == "start":
            assert dev not in holding, f"GPU {dev} given to two shards at once"
            holding.add(dev)
        else:
            holding.discard(dev)


def test_a_shard_asking_more_gpus_than_any_node_has_fails_fast(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    spec = write_spec(tmp_path, "pipeline: greedy\ninput: {url: d}\nresources: {gpu: 3}\ntransform: {cmd: ['true']}\n")
    r = bflow("run", spec, "--json")  # embedded nodes have no GPUs
    assert r.code == 1
    assert "gpu=3" in r.json()["shards"][0]["error"] and "more than any node has" in r.json()["shards"][0]["error"]


def test_no_nvidia_smi_means_no_gpus(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert detect_gpus() == 0
