"""IPFS end to end: `bflow add`, `ipfs://` inputs (local store first, else a node's gateway
through ipfsspec), ipfsspec reading a job's outputs from the node that made them, and
`bflow get` refusing a tampered block."""

import os
import signal
import socket
import time
import uuid

import ipfsspec
import pytest
from cli_helpers import bflow, bflow_process, write_spec

from bacalhau_flow.home import store_root
from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.storage import ContentStore, bytes_cid

UNKNOWN = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


@pytest.fixture
def devstack(tmp_path):
    with Devstack(f"memory://ipfs-{uuid.uuid4().hex[:8]}", nodes=2, root=tmp_path / "nodes") as stack:
        yield stack


def books(tmp_path, tag: str):
    folder = tmp_path / "books"
    (folder / "drafts").mkdir(parents=True)
    (folder / "a.txt").write_text(f"alpha {tag}\n")
    (folder / "b.txt").write_text(f"beta {tag}\n")
    (folder / "drafts" / "c.txt").write_text(f"gamma {tag}\n")
    (folder / "notes.md").write_text("not a book\n")
    return folder


def cat_books_spec(tmp_path, cid: str, glob: str = "/*.txt"):
    return write_spec(tmp_path, f"""
pipeline: ipfs-books
input: {{name: books, url: 'ipfs://{cid}', glob: '{glob}'}}
transform: {{cmd: [sh, -c, 'find $BFLOW_INPUTS/books -type f | sort | xargs cat']}}
""")


def test_bflow_add_prints_the_cid_and_how_to_use_it(tmp_path):
    folder = books(tmp_path, tmp_path.name)
    r = bflow("add", folder)
    assert r.code == 0, r.stderr
    cid = r.stdout.strip()
    assert cid.startswith("bafy") and cid == ContentStore(tmp_path / "s").put_tree(folder)
    assert f"url: ipfs://{cid}" in r.stderr
    assert ContentStore(store_root()).has(cid)


def test_bflow_gateway_serves_this_machines_store_until_interrupted(tmp_path):
    cid = bflow("add", books(tmp_path, "served")).stdout.strip()
    process = bflow_process("gateway", "--port", "0")
    try:
        url = process.stdout.readline().decode().strip()
        fs = ipfsspec.AsyncIPFSFileSystem(gateway_addr=url)
        assert fs.cat_file(f"{cid}/a.txt") == b"alpha served\n"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0


def test_bflow_add_of_a_missing_path_fails_clearly(tmp_path):
    r = bflow("add", tmp_path / "nothing-here")
    assert r.code != 0 and "no such file or directory" in r.stderr and "Traceback" not in r.stderr


def test_added_folder_runs_as_an_ipfs_input_with_a_glob_on_the_embedded_network(tmp_path):
    tag = uuid.uuid4().hex
    cid = bflow("add", books(tmp_path, tag)).stdout.strip()
    spec = cat_books_spec(tmp_path, cid)
    plan = bflow("plan", spec, "--json").json()["pipelines"][0]["shards"]
    assert [s["datums"] for s in plan] == [[{"books": ["/a.txt"]}], [{"books": ["/b.txt"]}]]
    r = bflow("run", spec)
    assert r.code == 0, r.stderr
    assert r.stdout == f"alpha {tag}\nbeta {tag}\n"


def test_an_empty_local_store_reads_ipfs_inputs_from_a_node_gateway(tmp_path, devstack, monkeypatch):
    tag = uuid.uuid4().hex
    cid = devstack.nodes[0].store.put_tree(books(tmp_path, tag))  # only that node has it
    monkeypatch.setenv("BFLOW_HOME", str(tmp_path / "home"))  # this machine: an empty content store
    monkeypatch.setenv("IPFS_GATEWAY", devstack.gateways[0])
    assert not ContentStore(store_root()).has(cid)
    r = bflow("run", cat_books_spec(tmp_path, cid, glob="/**.txt"))
    assert r.code == 0, r.stderr
    assert r.stdout == f"alpha {tag}\nbeta {tag}\ngamma {tag}\n"
    assert not ContentStore(store_root()).has(cid)  # inputs are staged, not copied into the store


def test_a_cid_no_gateway_has_fails_at_once_naming_it(tmp_path, devstack, monkeypatch):
    monkeypatch.setenv("IPFS_GATEWAY", devstack.gateways[0])
    started = time.monotonic()
    r = bflow("run", cat_books_spec(tmp_path, UNKNOWN))
    assert r.code == 2 and "Traceback" not in r.stderr
    assert f"ipfs://{UNKNOWN}: not in the local content store nor on {devstack.gateways[0]}" in r.stderr
    assert time.monotonic() - started < 15


def test_a_gateway_that_never_answers_fails_within_bflow_ipfs_timeout(tmp_path, monkeypatch):
    with socket.socket() as silent:  # takes connections, never answers: a gateway still searching
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("IPFS_GATEWAY", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("BFLOW_IPFS_TIMEOUT", "2")
        started = time.monotonic()
        r = bflow("plan", cat_books_spec(tmp_path, UNKNOWN))
    assert r.code == 2 and "no answer within 2 s" in r.stderr and "BFLOW_IPFS_TIMEOUT" in r.stderr
    assert time.monotonic() - started < 10


def test_every_node_announces_its_gateway_and_bflow_nodes_shows_it(devstack):
    r = bflow("nodes", "--network", devstack.url, "--json", "--wait", "1")
    assert r.code == 0, r.stderr
    assert sorted(n["gateway"] for n in r.json()) == sorted(devstack.gateways)
    assert len(set(devstack.gateways)) == 2


def test_ipfsspec_lists_reads_and_verifies_a_jobs_outputs_from_the_node_gateway(tmp_path, devstack):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "seed").write_text(uuid.uuid4().hex)
    spec = write_spec(tmp_path, """
pipeline: make-outputs
input: {url: in, glob: '/'}
transform: {cmd: [sh, -c, 'mkdir $BFLOW_OUTPUTS/sub && head -c 700000 /dev/urandom > $BFLOW_OUTPUTS/noise.bin && cat $BFLOW_INPUTS/in/seed > $BFLOW_OUTPUTS/sub/seed.txt']}
""")
    r = bflow("run", spec, "--network", devstack.url, "--json")
    assert r.code == 0, r.stderr
    shard = r.json()["shards"][0]
    node = next(n for n in devstack.nodes if n.id == shard["node"])

    fs = ipfsspec.AsyncIPFSFileSystem(gateway_addr=node.gateway)
    found = fs.find(shard["cid"], detail=True)
    assert sorted(found) == [f"{shard['cid']}/noise.bin", f"{shard['cid']}/sub/seed.txt"]
    got = tmp_path / "got"
    assert bflow("get", r.json()["id"], "-o", got).code == 0
    for name, info in found.items():
        data = fs.cat_file(name)
        assert bytes_cid(data) == info["CID"]  # what came over HTTP hashes to the CID it claims
        assert data == (got / "outputs" / name.split("/", 1)[1]).read_bytes()
    assert found[f"{shard['cid']}/noise.bin"]["size"] == 700_000


def test_bflow_get_refuses_a_tampered_block_and_leaves_no_result(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x").write_text("x")
    text = f"result {uuid.uuid4().hex}\n"
    spec = write_spec(tmp_path, f"""
pipeline: tamper
input: {{url: in, glob: '/'}}
transform: {{cmd: [sh, -c, 'printf "{text.strip()}\\n" > $BFLOW_OUTPUTS/result.txt']}}
""")
    r = bflow("run", spec, "--json")
    assert r.code == 0, r.stderr
    job = r.json()
    store = ContentStore(store_root())
    (_, file_cid, _), = store.iter_files(job["cid"])
    block = store.blocks / file_cid[-2:] / file_cid
    good = block.read_bytes()
    assert good == text.encode()
    block.write_bytes(b"R" + good[1:])  # one byte changed on disk
    try:
        out = tmp_path / "got"
        r = bflow("get", job["id"], "-o", out)
        assert r.code != 0 and "Traceback" not in r.stderr
        assert f"block {file_cid} is corrupt" in r.stderr
        assert sorted(os.listdir(out)) == []  # nothing that could pass for the job's results
    finally:
        block.write_bytes(good)
    assert bflow("get", job["id"], "-o", out).code == 0
    assert (out / "outputs" / "result.txt").read_text() == text and (out / "manifest.json").exists()
