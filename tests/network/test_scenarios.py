"""The same end-to-end scenarios on a 3-node devstack, over every transport."""

import pytest
from cli_helpers import bflow, write_spec
from scenarios import LINES, SCENARIOS  # the table, shared with the other executors and sources


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name, devstack, tmp_path):
    transform, exit_code, stdout, output = SCENARIOS[name]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "fruit.txt").write_text(LINES)
    spec = write_spec(tmp_path, f"pipeline: scenario\ninput: {{url: in, glob: '/fruit.txt'}}\ntransform:\n  {transform}\n")
    r = bflow("run", spec, "--network", devstack.url, "--json", "--reprocess")  # the same job ran on the other transport
    job = r.json()
    assert job["shards"][0]["exit_code"] == exit_code, r.stderr
    assert job["shards"][0]["state"] == ("completed" if exit_code == 0 else "failed")  # ran, not reused
    assert r.code == (0 if exit_code == 0 else 1)
    got = tmp_path / "got"
    assert bflow("get", job["id"], "-o", got).code == 0
    assert (got / "stdout").read_text() == stdout
    if exit_code:
        assert (got / "stderr").read_text() == "broken\n"
        assert (got / "shards" / "0" / "exit_code").read_text().strip() == str(exit_code)
    if output:
        assert (got / "outputs" / output[0]).read_text() == output[1]
    assert job["shards"][0]["node"] in {n.id for n in devstack.nodes}


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
