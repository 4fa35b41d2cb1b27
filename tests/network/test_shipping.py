"""A requester ships a shard's local inputs as content (network/shipping.py), and a node on
another machine stages them from the requester's gateway (network/staging.py with providers):
a real gateway on 127.0.0.1 and two real content stores, the node's starting empty."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import fsspec
import pytest

from bacalhau_flow.errors import StagingError
from bacalhau_flow.network.messages import InputRef, ShardRequest, TransformRef
from bacalhau_flow.network.shipping import is_local, ship_local_inputs
from bacalhau_flow.network.staging import make_writable, stage_inputs
from bacalhau_flow.storage import ContentStore
from bacalhau_flow.testing.gateway import gateway_in_thread

FILES = {"a.txt": "aa", "b.csv": "bbb", "sub/c.txt": "c", "sub/deep/d.txt": "dddd", "sp ace/e f.txt": "e",
         "other/x.txt": "not in the shard"}


def make_tree(root: Path, files: dict[str, str] = FILES) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def request(inputs: dict[str, str], *datums: dict[str, list[str]]) -> ShardRequest:
    return ShardRequest(job_id="j-ship", pipeline="p", shard_index=0, shard_id="s", shard_count=1,
                        transform=TransformRef(cmd=["true"]),
                        inputs=[InputRef(name=n, url=u) for n, u in inputs.items()], datums=list(datums))


def tree_of(root: Path) -> dict[str, str | None]:
    """Every path under `root`: a file's text, None for a directory."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_text()) for p in sorted(root.rglob("*"))}


def shipped_cid(req: ShardRequest, name: str) -> str:
    url = next(ref.url for ref in req.inputs if ref.name == name)
    assert url.startswith("ipfs://"), url
    return url.removeprefix("ipfs://")


@pytest.fixture
def dirs(tmp_path):
    """Work folders for staging, made writable again afterwards so tmp_path can be removed."""
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path / name / "inputs")
        return made[-1]

    yield make
    for d in made:
        make_writable(d)


def test_local_inputs_become_ipfs_of_just_the_shards_paths(tmp_path):
    src = make_tree(tmp_path / "src")
    (src / "sub" / "empty").mkdir()
    store = ContentStore(tmp_path / "requester")
    memory = f"memory://ship-{uuid.uuid4().hex[:8]}"
    req = request({"in": str(src), "web": "https://example.invalid/data/", "mem": memory, "cas": "ipfs://bafkqaaa"},
                  {"in": ["/a.txt"], "web": ["/w.txt"]}, {"in": ["/sub"], "mem": ["/m.txt"]})
    shipped = ship_local_inputs(req, store)
    cid = shipped_cid(shipped, "in")
    assert [(f, s) for f, _, s in store.iter_files(cid)] == [
        ("a.txt", 2), ("sub/c.txt", 1), ("sub/deep/d.txt", 4)]
    assert [(e.name, e.is_dir) for e in store.ls(cid)] == [("a.txt", False), ("sub", True)]
    assert [e.name for e in store.ls(next(e.cid for e in store.ls(cid) if e.name == "sub"))] == ["c.txt", "deep", "empty"]
    assert store.cat(next(c for f, c, _ in store.iter_files(cid) if f == "sub/deep/d.txt")) == b"dddd"
    # everything else is as it was: other inputs, datums, the original request
    assert [(r.name, r.url) for r in shipped.inputs[1:]] == [(r.name, r.url) for r in req.inputs[1:]]
    assert shipped.datums == req.datums and req.inputs[0].url == str(src)
    assert shipped.model_dump(exclude={"inputs"}) == req.model_dump(exclude={"inputs"})


def test_file_urls_and_single_files_are_local_too(tmp_path):
    src = make_tree(tmp_path / "src")
    (tmp_path / "one.csv").write_text("x,y\n")
    store = ContentStore(tmp_path / "requester")
    assert is_local(str(src)) and is_local(f"file://{src}") and not is_local("ipfs://bafkqaaa")
    shipped = ship_local_inputs(request({"in": f"file://{src}", "one": str(tmp_path / "one.csv")},
                                        {"in": ["/b.csv"], "one": ["/one.csv"]}), store)
    assert [f for f, _, _ in store.iter_files(shipped_cid(shipped, "in"))] == ["b.csv"]
    assert [(f, s) for f, _, s in store.iter_files(shipped_cid(shipped, "one"))] == [("one.csv", 4)]


def test_a_request_without_local_inputs_is_left_alone(tmp_path):
    req = request({"web": "https://example.invalid/"}, {"web": ["/x"]})
    assert ship_local_inputs(req, ContentStore(tmp_path / "requester")) is req


def test_the_same_files_ship_as_the_same_cid(tmp_path):
    src = make_tree(tmp_path / "src")
    store = ContentStore(tmp_path / "requester")
    one = ship_local_inputs(request({"in": str(src)}, {"in": ["/sub"]}, {"in": ["/a.txt"]}), store)
    two = ship_local_inputs(request({"in": str(src)}, {"in": ["/a.txt", "/sub/c.txt"]}, {"in": ["/sub"]}), store)
    assert shipped_cid(one, "in") == shipped_cid(two, "in")


@pytest.mark.parametrize("gone", ["/gone.txt", "/a.txt"])
def test_a_vanished_file_is_a_staging_error_naming_the_input(tmp_path, gone):
    src = make_tree(tmp_path / "src")
    req = request({"in": str(src)}, {"in": ["/b.csv"]}, {"in": [gone]})
    if gone == "/a.txt":
        (src / "a.txt").unlink()  # planned, then removed before the shard was sent
    with pytest.raises(StagingError, match=rf"cannot send input 'in' from {src}.*{gone.lstrip('/')}") as info:
        ship_local_inputs(req, ContentStore(tmp_path / "requester"))
    assert not info.value.retryable


def test_an_unreadable_file_is_a_staging_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    src = make_tree(tmp_path / "src")
    (src / "a.txt").chmod(0)
    with pytest.raises(StagingError, match="cannot send input 'in'"):
        ship_local_inputs(request({"in": str(src)}, {"in": ["/a.txt"]}), ContentStore(tmp_path / "requester"))


@pytest.mark.parametrize("datums", [
    [["/a.txt"], ["/sub"]],
    [["/sub", "/sub/c.txt"], ["/sp ace/e f.txt"], ["/b.csv"]],
    [["/"]],
    [["/sub/deep"], ["/sp ace"]],
], ids=["file-and-dir", "nested-and-spaces", "root", "deep-dirs"])
def test_staging_shipped_inputs_from_a_gateway_equals_staging_them_directly(tmp_path, dirs, datums):
    src = make_tree(tmp_path / "src")
    (src / "sub" / "empty").mkdir()
    (src / "sub" / "link.txt").symlink_to(src / "a.txt")  # a file symlink: copied as a file
    (src / "sub" / "dirlink").symlink_to(src / "other", target_is_directory=True)  # not followed
    base = f"/ship-{uuid.uuid4().hex[:8]}"
    fsspec.filesystem("memory").pipe({f"{base}/m.txt": b"mem"})
    req = request({"in": str(src), "mem": f"memory://{base}"}, *({"in": d} for d in datums), {"mem": ["/m.txt"]})

    direct = dirs("direct")
    direct_size = stage_inputs(req, direct)

    requester = ContentStore(tmp_path / "requester")
    shipped = ship_local_inputs(req, requester)
    node = ContentStore(tmp_path / "node")
    remote = dirs("remote")
    with gateway_in_thread(requester) as url:
        remote_size = stage_inputs(shipped.model_copy(update={"providers": [url]}), remote, node)
    assert tree_of(remote) == tree_of(direct)
    assert remote_size == direct_size
    assert ("in/other/x.txt" in tree_of(remote)) == (["/"] in datums)  # only the shard's paths travel
    assert "in/sub/dirlink" not in tree_of(remote)  # a directory symlink is not followed
    assert tree_of(remote).get("in/sub/link.txt", "aa") == "aa"  # a file symlink arrives as the file
    for f, _, _ in requester.iter_files(shipped_cid(shipped, "in")):  # the node holds every shipped block now
        assert (remote / "in" / f).exists()


def test_a_second_shard_on_the_same_node_fetches_only_its_new_files(tmp_path, dirs):
    src = make_tree(tmp_path / "src")
    requester = ContentStore(tmp_path / "requester")
    node = ContentStore(tmp_path / "node")
    first = ship_local_inputs(request({"in": str(src)}, {"in": ["/sub"]}), requester)
    second = ship_local_inputs(request({"in": str(src)}, {"in": ["/sub"]}, {"in": ["/a.txt"]}), requester)
    with gateway_in_thread(requester) as url:
        stage_inputs(first.model_copy(update={"providers": [url]}), dirs("one"), node)
        held = set(os.listdir(node.blocks))
        # the second shard's files, were the gateway gone: sub/ is held, only a.txt is missing
        with pytest.raises(StagingError, match=r"cannot stage input 'in' path /a.txt.*127.0.0.1:1"):
            stage_inputs(second.model_copy(update={"providers": ["http://127.0.0.1:1"]}), dirs("two"), node)
        stage_inputs(second.model_copy(update={"providers": [url]}), dirs("three"), node)
    assert held <= set(os.listdir(node.blocks))
    assert tree_of(tmp_path / "three" / "inputs") == {
        "in": None, "in/a.txt": "aa", "in/sub": None, "in/sub/c.txt": "c", "in/sub/deep": None, "in/sub/deep/d.txt": "dddd"}


def test_shipped_inputs_without_a_reachable_provider_fail_naming_the_input(tmp_path, dirs):
    src = make_tree(tmp_path / "src")
    shipped = ship_local_inputs(request({"in": str(src)}, {"in": ["/a.txt"]}), ContentStore(tmp_path / "requester"))
    with pytest.raises(StagingError, match=r"cannot stage input 'in' path /a.txt: .*http://127.0.0.1:1: cannot fetch"):
        stage_inputs(shipped.model_copy(update={"providers": ["http://127.0.0.1:1"]}), dirs("node"),
                     ContentStore(tmp_path / "node"))
