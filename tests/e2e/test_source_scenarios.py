"""The scenario table (scenarios.py), with its input from every kind of
source: a local folder, an HTTP server, S3 (moto), and IPFS (`bflow add`, then `ipfs://CID`)."""

import pytest
from cli_helpers import bflow, write_spec
from http_helpers import FileServer
from scenarios import LINES, SCENARIOS


@pytest.fixture(params=["local", "http", "s3", "ipfs"])
def source(request, tmp_path):
    """The url of a folder `in` holding fruit.txt, on the source named by the parameter."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "fruit.txt").write_text(LINES)
    if request.param == "local":
        yield "in"
    elif request.param == "http":
        server = FileServer(tmp_path).start()
        yield server.url + "/in/"
        server.stop()
    elif request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        yield f"s3://{s3.bucket({'in/fruit.txt': LINES.encode()})}/in"
    else:
        added = bflow("add", folder)
        assert added.code == 0, added.stderr
        yield f"ipfs://{added.stdout.strip()}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_over_each_source(name, source, tmp_path):
    transform, exit_code, stdout, output = SCENARIOS[name]
    spec = write_spec(tmp_path, f"pipeline: scenario\ninput: {{name: in, url: '{source}', glob: '/fruit.txt'}}\n"
                                f"transform:\n  {transform}\n")
    r = bflow("run", spec, "--json", "--reprocess")  # the same bytes came from another source
    job = r.json()
    assert job["shards"][0]["exit_code"] == exit_code, r.stderr
    assert job["shards"][0]["state"] == ("completed" if exit_code == 0 else "failed")  # ran, not reused
    got = tmp_path / "got"
    assert bflow("get", job["id"], "-o", got).code == 0
    assert (got / "stdout").read_text() == stdout
    if output:
        assert (got / "outputs" / output[0]).read_text() == output[1]
