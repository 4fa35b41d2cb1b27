"""`ipfs://` through fsspec: the local content store first, then gateways through ipfsspec,
every gateway read verified, every gateway call bounded in time."""

import asyncio
import io
import os
import socket
import threading
import time

import fsspec
import pytest

import bacalhau_flow.plan.inputs  # noqa: F401  registers ipfs://
from bacalhau_flow.errors import ContentError, InputNotFound, InputUnreachable
from bacalhau_flow.plan.inputs import open_input
from bacalhau_flow.storage import ContentStore, bytes_cid
from bacalhau_flow.storage.gateway import Gateway
from bacalhau_flow.storage.ipfs_fs import IPFSFileSystem, _check
from bacalhau_flow.testing.gateway import gateway_in_thread

UNKNOWN = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"  # in no store here


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """A tree in a store that only a gateway serves (not the local store of any test)."""
    tmp = tmp_path_factory.mktemp("remote")
    src = tmp / "src"
    (src / "books" / "old").mkdir(parents=True)
    (src / "books" / "a.txt").write_text("one two three\n")
    (src / "books" / "old" / "b.txt").write_text("four\n")
    (src / "big.bin").write_bytes(os.urandom(600_000))
    store = ContentStore(tmp / "store")
    root = store.put_tree(src)
    with gateway_in_thread(store) as url:
        yield {"url": url, "root": root, "src": src, "store": store}


@pytest.fixture
def silent_gateway():
    """A TCP server that takes connections and never answers (a gateway still searching)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_ipfs_protocol_is_ours(remote):
    assert isinstance(fsspec.filesystem("ipfs"), IPFSFileSystem)


def test_local_store_is_read_first_without_any_gateway(tmp_path, remote, silent_gateway):
    local = ContentStore(tmp_path / "store")
    root = local.put_tree(remote["src"])
    fs = IPFSFileSystem(store_root=str(tmp_path / "store"), gateways=silent_gateway, timeout=1)
    assert fs.info(f"ipfs://{root}/books")["type"] == "directory"
    names = sorted(fs.find(root, withdirs=True))
    assert names == [root, f"{root}/big.bin", f"{root}/books", f"{root}/books/a.txt", f"{root}/books/old",
                     f"{root}/books/old/b.txt"]
    assert fs.cat_file(f"{root}/books/a.txt") == b"one two three\n"
    assert fs.open(f"{root}/big.bin").read() == (remote["src"] / "big.bin").read_bytes()


def test_an_empty_local_store_reads_through_ipfsspec_from_the_gateway(tmp_path, remote):
    fs = IPFSFileSystem(store_root=str(tmp_path / "empty"), gateways=remote["url"], timeout=10)
    root = remote["root"]
    assert fs.info(f"{root}/big.bin")["size"] == 600_000
    listing = {e["name"]: e["type"] for e in fs.ls(f"{root}/books")}
    assert listing == {f"{root}/books/a.txt": "file", f"{root}/books/old": "directory"}
    fs.get(f"{root}/", str(tmp_path / "copy") + "/", recursive=True)
    assert (tmp_path / "copy" / "books" / "old" / "b.txt").read_text() == "four\n"
    assert (tmp_path / "copy" / "big.bin").read_bytes() == (remote["src"] / "big.bin").read_bytes()
    assert not (tmp_path / "empty").exists()  # reading never writes the local store


def test_planning_lists_an_ipfs_tree_like_any_other_input(tmp_path, remote, monkeypatch):
    monkeypatch.setenv("IPFS_GATEWAY", remote["url"])
    monkeypatch.setenv("BFLOW_HOME", str(tmp_path / "home"))
    root = open_input(f"ipfs://{remote['root']}/books")
    assert sorted(root.walk()) == [("/a.txt", False, 14), ("/old", True, None), ("/old/b.txt", False, 5)]


def test_later_gateways_are_tried_when_the_first_lacks_the_cid(tmp_path, remote):
    other = ContentStore(tmp_path / "other")
    other.put_bytes(b"something else")

    async def serve():
        gateway = Gateway(other)
        return gateway, await gateway.start()

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    gateway, first = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    try:
        fs = IPFSFileSystem(store_root=str(tmp_path / "empty"), gateways=f"{first}, {remote['url']}", timeout=10)
        assert fs.cat_file(f"{remote['root']}/books/a.txt") == b"one two three\n"
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def test_a_cid_no_gateway_has_is_input_not_found_at_once(tmp_path, remote):
    fs = IPFSFileSystem(store_root=str(tmp_path / "empty"), gateways=remote["url"], timeout=10)
    started = time.monotonic()
    with pytest.raises(InputNotFound, match=f"ipfs://{UNKNOWN}: not in the local content store nor on {remote['url']}"):
        fs.info(UNKNOWN)
    assert time.monotonic() - started < 5
    assert not fs.exists(UNKNOWN)


def test_a_gateway_that_never_answers_ends_within_the_timeout(tmp_path, silent_gateway):
    fs = IPFSFileSystem(store_root=str(tmp_path / "empty"), gateways=silent_gateway, timeout=2)
    started = time.monotonic()
    with pytest.raises(InputUnreachable, match="no answer within 2 s"):
        fs.info(UNKNOWN)
    assert time.monotonic() - started < 8


def test_the_timeout_comes_from_bflow_ipfs_timeout(tmp_path, silent_gateway, monkeypatch):
    monkeypatch.setenv("BFLOW_IPFS_TIMEOUT", "1")
    fs = IPFSFileSystem(store_root=str(tmp_path / "empty"), gateways=silent_gateway)
    with pytest.raises(InputUnreachable, match="no answer within 1 s"):
        fs.info(UNKNOWN)


def test_no_gateway_configured_says_how_to_set_one(tmp_path, monkeypatch):
    for name in ("IPFS_GATEWAY", "IPFSSPEC_GATEWAYS", "IPFS_PATH", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    from ipfsspec.async_ipfs import get_gateway

    get_gateway.cache_clear()
    fs = IPFSFileSystem(store_root=str(tmp_path / "empty"))
    with pytest.raises(InputUnreachable, match="no IPFS gateway is set") as caught:
        fs.info(UNKNOWN)
    assert "IPFS_GATEWAY" in caught.value.hint


def test_a_path_that_is_not_in_a_local_directory_is_not_found(tmp_path, remote):
    local = ContentStore(tmp_path / "store")
    root = local.put_tree(remote["src"])
    fs = IPFSFileSystem(store_root=str(tmp_path / "store"), gateways="http://127.0.0.1:9", timeout=1)
    with pytest.raises(InputNotFound, match="no such file or directory"):
        fs.info(f"{root}/books/missing.txt")


@pytest.mark.parametrize("size", [1000, 300_000])  # one raw block; two leaves under a dag-pb node
def test_gateway_content_that_does_not_hash_to_its_cid_is_refused(size):
    data = os.urandom(size)
    cid = bytes_cid(data)
    _check("x", cid, io.BytesIO(data))
    with pytest.raises(ContentError, match=f"does not match its CID {cid}"):
        _check("x", cid, io.BytesIO(data[:-1] + bytes([data[-1] ^ 1])))  # never the same bytes
