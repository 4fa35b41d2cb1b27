"""The same end-to-end scenarios on a 3-node devstack, over every transport."""

import pytest
from cli_helpers import bflow, write_spec

LINES = "apple 3\nbanana 12\ncherry 7\napple 9\n"

SCENARIOS = {
    "cat to stdout": ("cmd: [sh, -c, 'cat $BFLOW_INPUTS/in/*']", 0, LINES, None),
    "write to outputs": ("cmd: [sh, -c, 'wc -l < $BFLOW_INPUTS/in/fruit.txt > $BFLOW_OUTPUTS/lines']", 0, "",
                         ("lines", "4\n")),
    "grep": ("cmd: [grep, apple, /dev/stdin]\n  stdin: \"" + LINES.replace("\n", "\\n") + "\"", 0,
             "apple 3\napple 9\n", None),
    "sed": ("cmd: [sh, -c, 'sed -e s/apple/pear/ $BFLOW_INPUTS/in/fruit.txt']", 0, LINES.replace("apple", "pear"),
            None),
    "awk": ("cmd: [sh, -c, 'awk \"{s += \\$2} END {print s}\" $BFLOW_INPUTS/in/fruit.txt']", 0, "31\n", None),
    "failing command": ("cmd: [sh, -c, 'echo partial; echo broken >&2; exit 4']", 4, "partial\n", None),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name, devstack, tmp_path):
    transform, exit_code, stdout, output = SCENARIOS[name]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "fruit.txt").write_text(LINES)
    spec = write_spec(tmp_path, f"pipeline: scenario\ninput: {{url: in, glob: '/fruit.txt'}}\ntransform:\n  {transform}\n")
    r = bflow("run", spec, "--network", devstack.url, "--json")
    job = r.json()
    assert job["shards"][0]["exit_code"] == exit_code, r.stderr
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
    r = bflow("run", spec, "--network", devstack.url, "--json")
    assert r.code == 0, r.stderr
    job = r.json()
    assert len(job["shards"]) == 10
    assert len({s["node"] for s in job["shards"]}) >= 2
    got = tmp_path / "got"
    bflow("get", job["id"], "-o", got)
    files = sorted(p.name for p in (got / "outputs").iterdir())
    assert files == [f"x{i:03}" for i in range(100)]  # each exactly once
    assert all((got / "outputs" / f"x{i:03}").read_text() == f"{i}\n" for i in range(100))
