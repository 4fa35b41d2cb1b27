"""`batch_size: auto` with --network counts that network's nodes, not the embedded ones."""

import json

from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.network.messages import Capacity
from tests.e2e.cli_helpers import bflow, write_spec

GiB = 2**30


def test_plan_and_run_on_a_network_choose_the_batch_size_for_its_nodes(tmp_path, nats_server):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(100):
        (data / f"f{i:03d}").write_text("x")
    spec = write_spec(tmp_path, f"pipeline: auto\ninput: {{url: {data}, glob: '/*', batch_size: auto}}\n"
                                "transform: {cmd: ['true']}\nresources: {cpu: 1}\n")
    embedded = json.loads(bflow("plan", spec, "--json").stdout)["pipelines"][0]["batch_size_auto"]
    assert embedded["nodes"] == "embedded"
    with Devstack(nats_server.url, nodes=2, root=tmp_path / "nodes", capacity=Capacity(cpu=1, memory=GiB, disk=8 * GiB)):
        shown = bflow("plan", spec, "--json", "--network", nats_server.url)
        assert shown.code == 0, shown.stderr
        chosen = json.loads(shown.stdout)["pipelines"][0]["batch_size_auto"]
        # two nodes of one cpu, a shard asks one: 2 slots; 100 / (4 x 2) = 12.5 -> the next step, 20
        assert (chosen["nodes"], chosen["slots"], chosen["batch_size"], chosen["shards"]) == ("network", 2, 20, 5)
        assert embedded["slots"] != 2
        ran = bflow("run", spec, "--json", "--network", nats_server.url)
        assert ran.code == 0, ran.stderr
        assert len(ran.json()["shards"]) == 5
