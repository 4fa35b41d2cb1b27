"""`bflow network --network URL`: the live nodes with their load, and where a job's shards ran."""

from cli_helpers import bflow, write_spec


def test_the_picture_shows_every_node_and_the_shards_each_ran(devstack, tmp_path):
    (tmp_path / "d").mkdir()
    for i in range(6):
        (tmp_path / "d" / f"f{i}").write_text(str(i))
    spec = write_spec(tmp_path, "pipeline: placed\ninput: {url: d, glob: '/*'}\nresources: {cpu: 1}\n"
                                "transform: {cmd: [sh, -c, 'sleep 0.3']}\n")
    job = bflow("run", spec, "--network", devstack.url, "--json", "--reprocess").json()
    r = bflow("network", "--network", devstack.url, "--job", job["id"])
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    for node in devstack.nodes:
        assert any(node.id in line and "cpu" in line and "mem" in line for line in lines)
    assert "not on this network now" not in r.stdout  # every shard ran on a live node
    shown = {int(i) for line in lines if "(placed): shards" in line for i in line.split("shards")[1].split()}
    assert shown == set(range(6))


def test_without_a_job_the_picture_shows_the_newest_job_of_its_own_network_embedded_too(devstack, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    here = write_spec(tmp_path, "pipeline: on-this-network\ninput: {url: d, glob: '/*'}\n"
                                "transform: {cmd: ['true']}\n", name="here.yaml")
    elsewhere = write_spec(tmp_path, "pipeline: on-the-embedded-one\ninput: {url: d, glob: '/*'}\n"
                                     "transform: {cmd: ['true']}\n", name="elsewhere.yaml")
    mine = bflow("run", here, "--network", devstack.url, "--json", "--reprocess").json()
    newer = bflow("run", elsewhere, "--json", "--reprocess").json()  # newer, on the embedded network
    r = bflow("network", "--network", devstack.url, "--json")
    assert r.code == 0, r.stderr
    assert r.json()["job"]["id"] == mine["id"] != newer["id"]
    newest = bflow("run", here, "--network", devstack.url, "--json", "--reprocess").json()
    embedded = bflow("network", "--json")  # no --network: the embedded network's newest job
    assert embedded.code == 0, embedded.stderr
    assert embedded.json()["job"]["id"] == newer["id"] != newest["id"]
