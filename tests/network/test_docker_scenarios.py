"""The end-to-end scenarios (scenarios.py), each in a container of the busybox test image,
on a 3-node devstack over every transport; and a job whose image does not exist."""

import uuid

import pytest
from cli_helpers import bflow, write_spec
from scenarios import LINES, SCENARIOS, run_scenario

from bacalhau_flow.testing.docker_image import ensure_test_image


@pytest.fixture(scope="module")
def image():
    return ensure_test_image()


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_in_docker(name, image, devstack, tmp_path):
    run_scenario(name, tmp_path, image=image, network=devstack.url, node_ids={n.id for n in devstack.nodes})


def test_a_job_whose_image_does_not_exist_fails_and_says_why(image, devstack, tmp_path):
    missing = f"bflow-test/no-such-image-{uuid.uuid4().hex[:8]}:1"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "fruit.txt").write_text(LINES)
    spec = write_spec(tmp_path, "pipeline: missing\ninput: {url: in, glob: '/fruit.txt'}\n"
                                f"transform:\n  image: {missing}\n  cmd: [cat, /inputs/in/fruit.txt]\n")
    r = bflow("run", spec, "--network", devstack.url, "--json")
    assert r.code != 0
    assert "Traceback" not in r.stdout + r.stderr
    job = r.json()
    assert job["state"] == "failed" and job["shards"][0]["state"] == "failed"
    got = tmp_path / "got"
    bflow("get", job["id"], "-o", got)
    shard_stderr = (got / "shards" / "0" / "stderr").read_text()
    assert missing in shard_stderr and "cannot be pulled" in shard_stderr
    assert "hint: " in shard_stderr and "docker load" in shard_stderr
