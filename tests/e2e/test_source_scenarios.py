"""The scenario table (scenarios.py), with its input from every kind of
source: a local folder, an HTTP server, S3 (moto), and IPFS (`bflow add`, then `ipfs://CID`)."""

import pytest
from cli_helpers import bflow
from http_helpers import FileServer
from scenarios import LINES, SCENARIOS, run_scenario


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
    run_scenario(name, tmp_path, url=source)
