"""`batch_size: auto` (plan/batching.py): the rule against known cases, and what `bflow plan` shows."""

import json

import pytest

from bacalhau_flow.network.embedded import embedded_node_capacity
from bacalhau_flow.network.messages import Capacity, NodeInfo, ResourceAsk
from bacalhau_flow.plan.batching import MAX_AUTO_BATCH, auto_batch_size, network_slots, slots_on
from bacalhau_flow.plan.pipeline import plan_pipeline
from bacalhau_flow.spec import load_spec_text
from bacalhau_flow.errors import SpecError
from tests.e2e.cli_helpers import bflow, write_spec

GiB = 2**30


@pytest.mark.parametrize("datums, slots, expected", [
    (0, 60, 1),            # nothing to cut: any size does
    (1, 60, 1),
    (240, 60, 1),          # 4 shards a slot: exactly one datum each
    (241, 60, 2),          # one more datum: 2 (the next step), not 1.004
    (10_000, 60, 50),      # 41.7 -> 50: 200 shards
    (100_000, 60, 500),    # 416.7 -> 500: 200 shards
    (10_000_000, 60, MAX_AUTO_BATCH),  # bounded: 10,000 shards of 1,000
    (1_000, 1, 500),       # one slot: 250 -> 500, 2 shards
    (1_000, 0, 500),       # no slot known: counted as one
    (3_000, 100, 10),      # 7.5 -> 10
    (4_000, 100, 10),      # 10 exactly
    (4_001, 100, 20),
])
def test_auto_batch_size_known_cases(datums, slots, expected):
    assert auto_batch_size(datums, slots) == expected


def test_a_few_more_datums_keep_the_batch_size():
    """The 1-2-5 steps: adding a handful of datums leaves the shards (and their keys) as they were."""
    assert len({auto_batch_size(n, 60) for n in range(9_700, 10_300)}) == 1


@pytest.mark.parametrize("ask, expected", [
    (ResourceAsk(cpu=0.1, memory=256 * 2**20, disk=GiB), 20),   # cpu bound: 2 / 0.1
    (ResourceAsk(cpu=0.3, memory=256 * 2**20, disk=GiB), 6),    # floor(6.67)
    (ResourceAsk(cpu=0.01, memory=GiB, disk=GiB), 8),           # memory bound: 8 GiB / 1 GiB
    (ResourceAsk(cpu=0.01, memory=2**20, disk=25 * GiB), 4),    # disk bound
    (ResourceAsk(cpu=4, memory=2**20, disk=GiB), 0),            # never fits
    (ResourceAsk(cpu=0.1, memory=2**20, disk=GiB, gpu=1), 0),   # no GPU on this node
])
def test_slots_of_one_node(ask, expected):
    assert slots_on(Capacity(cpu=2, memory=8 * GiB, disk=100 * GiB), ask) == expected


def test_gpu_shards_count_gpus():
    node = Capacity(cpu=16, memory=64 * GiB, disk=100 * GiB, gpu=2)
    assert slots_on(node, ResourceAsk(cpu=1, memory=GiB, disk=GiB, gpu=1)) == 2


def node(name, cpu=2.0, labels=None, executors=("local",)):
    total = Capacity(cpu=cpu, memory=8 * GiB, disk=100 * GiB)
    return NodeInfo(id=name, version="x", executors=list(executors), labels=labels or {}, total=total, free=total)


def test_only_nodes_that_can_run_the_shard_count():
    ask = ResourceAsk(cpu=1, memory=GiB, disk=GiB)
    nodes = [node("a", labels={"site": "eu"}), node("b", cpu=4, labels={"site": "us"}),
             node("c", labels={"site": "eu"}, executors=("docker",)), node("d", cpu=0.5, labels={"site": "eu"})]
    assert network_slots(nodes, ask, {}, "local") == 2 + 4  # c lacks the executor, d is too small
    assert network_slots(nodes, ask, {"site": "eu"}, "local") == 2
    assert network_slots(nodes, ask, {"site": "eu"}, "docker") == 2
    assert network_slots(nodes, ask, {"site": "mars"}, "local") == 0


def spec(data, batch="auto", extra=""):
    (pipeline,) = load_spec_text(f"pipeline: p\ninput: {{url: {data}, glob: '/*', batch_size: {batch}}}\n"
                                 f"transform: {{cmd: ['true']}}\n{extra}")
    return pipeline


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(1000):
        (folder / f"f{i:04d}").write_text("x")
    return folder


def test_plan_uses_the_embedded_network_by_default(data):
    per_node = slots_on(embedded_node_capacity(3), ResourceAsk(cpu=0.5, memory=2**20, disk=2**20))
    plan = plan_pipeline(spec(data, extra="resources: {cpu: 0.5, memory: 1Mi, disk: 1Mi}\n"))
    assert plan.batch.slots == 3 * per_node and plan.batch.nodes == "embedded"
    assert plan.batch.batch_size == auto_batch_size(1000, 3 * per_node)
    assert len(plan.shards) == plan.batch.shards == -(-1000 // plan.batch.batch_size)
    assert [d for s in plan.shards for d in s.datums] == [d for s in plan_pipeline(spec(data, 1)).shards
                                                           for d in s.datums]  # same datums, same order


def test_plan_for_given_nodes(data):
    plan = plan_pipeline(spec(data, extra="resources: {cpu: 1}\n"), nodes=[node("a"), node("b")])
    assert (plan.batch.slots, plan.batch.batch_size, len(plan.shards)) == (4, 100, 10)  # 1000 / 16 = 62.5 -> 100


def test_a_selector_no_embedded_node_has_plans_one_slot(data):
    plan = plan_pipeline(spec(data, extra="selector: {gpu: a100}\n"))
    assert (plan.batch.slots, plan.batch.batch_size) == (1, 500)


def test_a_number_is_kept_as_it_is(data):
    plan = plan_pipeline(spec(data, 7))
    assert plan.batch is None and len(plan.shards) == 143 and "batch_size_auto" not in plan.to_json()


@pytest.mark.parametrize("bad, message", [
    ("0", "must be 1 or more (or auto), got 0"),
    ("'many'", "expected a number of datums per shard (1 or more) or auto, got 'many'"),
    ("2.5", "got 2.5"),
])
def test_bad_batch_sizes_are_one_clear_error(data, bad, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec(data, bad)


def test_bflow_plan_shows_the_choice(tmp_path, data):
    path = write_spec(tmp_path, f"pipeline: p\ninput: {{url: {data}, glob: '/*', batch_size: auto}}\n"
                                "transform: {cmd: ['true']}\n")
    shown = bflow("plan", path)
    assert shown.code == 0, shown.stderr
    assert "batch_size auto: " in shown.stdout and "1000 datums over" in shown.stdout
    planned = json.loads(bflow("plan", path, "--json").stdout)["pipelines"][0]
    assert planned["batch_size_auto"]["datums"] == 1000 and planned["batch_size_auto"]["shards_per_slot"] == 4
    assert len(planned["shards"]) == planned["batch_size_auto"]["shards"]
    assert len(planned["shards"][0]["datums"]) == planned["batch_size"]
