"""Pulling a DAG over HTTP from real gateways (storage/gateway.py on 127.0.0.1) into real
content stores: only what is missing is fetched, every block is checked, and providers that
are unreachable, lack the CID or tamper with a block are skipped for the next."""

import os
import shutil
import socket
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO

import pytest

from bacalhau_flow.storage import ContentStore, unixfs
from bacalhau_flow.storage.car import car_block, car_header, read_car
from bacalhau_flow.storage import http_server, pull as pull_module
from bacalhau_flow.storage.pull import PullError, missing_roots, pull
from bacalhau_flow.testing.gateway import gateway_in_thread

BIG = 5 * unixfs.CHUNK_SIZE + 4321  # > 1 MiB: a file node over six raw leaves
UNREACHABLE = "http://127.0.0.1:1"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tree in a store served by a real gateway: {url, root, src, store}."""
    tmp = tmp_path_factory.mktemp("pull-source")
    src = tmp / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "big.bin").write_bytes(os.urandom(BIG))
    (src / "sub" / "deeper" / "c.csv").write_text("x,y\n1,2\n")
    (src / "empty").mkdir()
    store = ContentStore(tmp / "store")
    root = store.put_tree(src)
    with gateway_in_thread(store) as url:
        yield {"url": url, "root": root, "src": src, "store": store}


class Tamperer:
    """A provider that answers every request with the honest gateway's CAR, but one byte of
    its last block flipped (the block keeps its CID). Counts the requests it served."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                try:
                    with urllib.request.urlopen(outer.upstream + self.path, timeout=10) as r:
                        body = r.read()
                except urllib.error.HTTPError as e:
                    self.send_response(e.code)
                    self.end_headers()
                    return
                body = outer.tamper(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.ipld.car; version=1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.corrupted: bytes | None = None  # the CID of the block sent wrong, last time

    @staticmethod
    def root_of(car: bytes) -> bytes:
        header_len, pos = unixfs._read_varint(car, 0)
        header = car[pos:pos + header_len]
        return header[header.index(b"\xd8\x2a\x58\x25\x00") + 5:][:36]  # tag 42, bytes(37): 0x00, a CIDv1

    def tamper(self, car: bytes) -> bytes:
        sections = list(read_car(BytesIO(car)))
        cid, data = sections[-1]
        sections[-1] = (cid, bytes([data[0] ^ 0xFF]) + data[1:])
        self.corrupted = cid
        return car_header(self.root_of(car)) + b"".join(car_block(c, d) for c, d in sections)

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tamperer(source):
    with Tamperer(source["url"]) as t:
        yield t


def block_path(store: ContentStore, cid: str):
    key = unixfs.cid_to_str(unixfs.parse_cid(cid))
    return store.blocks / key[-2:] / key


def cid_at(store: ContentStore, root: str, path: str) -> str:
    cid = root
    for name in path.split("/"):
        cid = next(e.cid for e in store.ls(cid) if e.name == name)
    return cid


def exported_equals_source(store: ContentStore, root: str, src, dest) -> None:
    store.export(root, dest)
    want = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == want
    for rel in want:
        if (src / rel).is_file():
            assert (dest / rel).read_bytes() == (src / rel).read_bytes(), rel


def all_blocks_bytes(store: ContentStore, root: str) -> int:
    return sum(len(store.get_block(c)) for c in store.blocks_of(root))


def test_a_tree_pulled_from_one_gateway_exports_byte_for_byte(source, tmp_path):
    store = ContentStore(tmp_path / "here")
    fetched = pull(store, source["root"], [source["url"]])
    assert fetched == all_blocks_bytes(source["store"], source["root"])
    assert len(list(source["store"].blocks_of(cid_at(source["store"], source["root"], "sub/big.bin")))) == 7
    assert missing_roots(store, unixfs.parse_cid(source["root"])) == []
    exported_equals_source(store, source["root"], source["src"], tmp_path / "out")


def test_a_second_pull_fetches_nothing_and_asks_no_one(source, tmp_path):
    store = ContentStore(tmp_path / "here")
    pull(store, source["root"], [source["url"]])
    assert pull(store, source["root"], [source["url"]]) == 0
    assert pull(store, source["root"], [UNREACHABLE]) == 0  # nothing missing: no provider is contacted
    assert pull(store, source["root"], [], "sub/big.bin") == 0


def test_a_path_pulls_only_that_files_subtree(source, tmp_path):
    s, root = source["store"], source["root"]
    store = ContentStore(tmp_path / "here")
    big = cid_at(s, root, "sub/big.bin")
    fetched = pull(store, root, [source["url"]], "sub/big.bin")
    assert fetched >= BIG
    assert all(store.has(c) for c in s.blocks_of(big))
    assert store.has(root) and store.has(cid_at(s, root, "sub"))  # the directories on the way
    for other in ("a.txt", "sub/deeper", "sub/deeper/c.csv", "empty"):
        assert not store.has(cid_at(s, root, other)), other
    assert store.cat(big) == (source["src"] / "sub" / "big.bin").read_bytes()
    # then a sibling: only its own blocks travel, the directories held already are not fetched again
    small = cid_at(s, root, "a.txt")
    assert pull(store, root, [source["url"]], "a.txt") == len(s.get_block(small))
    assert store.cat(small) == b"alpha\n"
    assert not store.has(cid_at(s, root, "sub/deeper"))


def test_a_path_that_is_not_there_is_file_not_found(source, tmp_path):
    store = ContentStore(tmp_path / "here")
    pull(store, source["root"], [source["url"]], "a.txt")
    with pytest.raises(FileNotFoundError):
        pull(store, source["root"], [source["url"]], "nope.txt")


def test_an_unreachable_provider_is_skipped_for_the_next(source, tmp_path):
    store = ContentStore(tmp_path / "here")
    assert pull(store, source["root"], [UNREACHABLE, source["url"]]) == all_blocks_bytes(source["store"], source["root"])
    exported_equals_source(store, source["root"], source["src"], tmp_path / "out")


def test_a_tampering_provider_is_skipped_and_what_it_sent_right_is_kept(source, tamperer, tmp_path):
    store = ContentStore(tmp_path / "here")
    fetched = pull(store, source["root"], [tamperer.url, source["url"]])
    assert tamperer.requests and tamperer.corrupted is not None
    bad = unixfs.cid_to_str(tamperer.corrupted)
    # the blocks before the bad one were checked and kept: only the bad one came from the good gateway
    assert fetched == len(source["store"].get_block(bad))
    assert store.get_block(bad) == source["store"].get_block(bad)
    exported_equals_source(store, source["root"], source["src"], tmp_path / "out")


def test_a_tampering_provider_alone_is_a_pull_error_naming_the_cid(source, tamperer, tmp_path):
    store = ContentStore(tmp_path / "here")
    with pytest.raises(PullError) as info:
        pull(store, source["root"], [tamperer.url])
    message = str(info.value)
    assert source["root"] in message and tamperer.url in message
    assert unixfs.cid_to_str(tamperer.corrupted) in message and "does not match its CID" in message
    assert not store.has(unixfs.cid_to_str(tamperer.corrupted))  # a bad block is never stored


def test_a_provider_without_the_cid_is_a_pull_error(source, tmp_path):
    empty = ContentStore(tmp_path / "empty")
    store = ContentStore(tmp_path / "here")
    with gateway_in_thread(empty) as url:
        with pytest.raises(PullError, match=rf"{source['root']}.*{url}: does not have it"):
            pull(store, source["root"], [url])
        with pytest.raises(PullError, match=rf"{url}: does not have it.*{UNREACHABLE}: cannot fetch"):
            pull(store, source["root"], [url, UNREACHABLE])
        # a path whose directories are here already, but not the file: named by the file's CID
        pull(store, source["root"], [source["url"]], "sub/deeper")
        small = cid_at(source["store"], source["root"], "a.txt")
        with pytest.raises(PullError, match=rf"ipfs://{small} could not be fetched.*{url}: does not have it"):
            pull(store, source["root"], [url], "a.txt")


def hog(url) -> socket.socket:
    parts = urllib.parse.urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def test_a_busy_provider_is_asked_again_once_it_has_room(source, tmp_path, monkeypatch):
    """A gateway at its connection cap answers 503; the pull waits its Retry-After and asks
    again, and gets everything once a connection closes."""
    monkeypatch.setattr(http_server, "MAX_CONNECTIONS", 1)
    held = hog(source["url"])
    time.sleep(0.2)
    threading.Timer(1.0, held.close).start()
    store = ContentStore(tmp_path / "here")
    started = time.monotonic()
    assert pull(store, source["root"], [source["url"]]) == all_blocks_bytes(source["store"], source["root"])
    assert time.monotonic() - started >= 0.9  # it did wait for the place
    exported_equals_source(store, source["root"], source["src"], tmp_path / "out")


def test_a_provider_busy_for_too_long_is_skipped_for_the_next(source, tmp_path, monkeypatch):
    monkeypatch.setattr(http_server, "MAX_CONNECTIONS", 1)
    monkeypatch.setattr(pull_module, "BUSY_WAIT_S", 2.0)
    held = hog(source["url"])
    time.sleep(0.2)
    try:
        with pytest.raises(PullError, match=r"busy \(HTTP 503: too many connections\), still after 2 s"):
            pull(ContentStore(tmp_path / "alone"), source["root"], [source["url"]])
        other = ContentStore(tmp_path / "other-source")
        other.put_tree(source["src"])
        with gateway_in_thread(other) as url:  # a second provider with the same tree
            store = ContentStore(tmp_path / "here")
            assert pull(store, source["root"], [source["url"], url]) > 0
            exported_equals_source(store, source["root"], source["src"], tmp_path / "out")
    finally:
        held.close()


def test_no_providers_is_a_pull_error(source, tmp_path):
    with pytest.raises(PullError, match="no provider was given"):
        pull(ContentStore(tmp_path / "here"), source["root"], [])


def test_a_partly_present_dag_fetches_only_the_missing_blocks(source, tmp_path):
    s, root = source["store"], source["root"]
    store = ContentStore(tmp_path / "here")
    pull(store, root, [source["url"]])
    big = cid_at(s, root, "sub/big.bin")
    leaves = list(s.blocks_of(big))[1:]
    gone = [leaves[1], leaves[4], cid_at(s, root, "sub/deeper/c.csv")]
    for cid in gone:
        block_path(store, cid).unlink()
    assert sorted(unixfs.cid_to_str(c) for c in missing_roots(store, unixfs.parse_cid(root))) == sorted(gone)
    assert pull(store, root, [source["url"]]) == sum(len(s.get_block(c)) for c in gone)
    exported_equals_source(store, root, source["src"], tmp_path / "out")


def test_a_missing_file_node_refetches_the_node_but_not_the_leaves_held(source, tmp_path):
    s, root = source["store"], source["root"]
    store = ContentStore(tmp_path / "here")
    pull(store, root, [source["url"]])
    big = cid_at(s, root, "sub/big.bin")
    block_path(store, big).unlink()
    assert pull(store, root, [source["url"]]) == len(s.get_block(big))  # its leaves came, held, not stored again
    assert store.cat(big) == (source["src"] / "sub" / "big.bin").read_bytes()


def test_a_missing_directory_on_the_path_fetches_the_path_whole(source, tmp_path):
    s, root = source["store"], source["root"]
    store = ContentStore(tmp_path / "here")
    pull(store, root, [source["url"]])
    shutil.rmtree(store.blocks)
    assert pull(store, root, [source["url"]], "sub/deeper/c.csv") == sum(
        len(s.get_block(c)) for c in (root, cid_at(s, root, "sub"), cid_at(s, root, "sub/deeper"),
                                       cid_at(s, root, "sub/deeper/c.csv")))
