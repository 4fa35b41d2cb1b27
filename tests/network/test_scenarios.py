"""The same end-to-end scenarios on a 3-node devstack, over every transport."""

import pytest
from cli_helpers import bflow, write_spec
from scenarios import (  # the table, shared with the other executors and sources
    SCENARIOS,
    run_scenario,
)


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name, devstack, tmp_path):
    run_scenario(name, tmp_path, network=devstack.url, node_ids={n.id for n in devstack.nodes})


def test_100_datums_in_batches_of_10_spread_over_the_nodes(devstack, tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    for i in range(100):
        (data / f"x{i:03}").write_text(f"{i}\n")
    spec = write_spec(tmp_path, "pipeline: hundred\ninput: {url: d, glob: '/*', batch_size: 10}\n"
                                "resources: {cpu: 1}\n"
                                "transform: {cmd: [sh, -c, 'for f in $BFLOW_INPUTS/d/*; do cp $f $BFLOW_OUTPUTS/; done; sleep 0.3']}\n")
    r = bflow("run", spec, "--network", devstack.url, "--json", "--reprocess")
    assert r.code == 0, r.stderr
    job = r.json()
    assert len(job["shards"]) == 10
    assert len({s["node"] for s in job["shards"]}) >= 2
    got = tmp_path / "got"
    bflow("get", job["id"], "-o", got)
    files = sorted(p.name for p in (got / "outputs").iterdir())
    assert files == [f"x{i:03}" for i in range(100)]  # each exactly once
    assert all((got / "outputs" / f"x{i:03}").read_text() == f"{i}\n" for i in range(100))
