"""The content store served as an IPFS trustless gateway: a real server (plain asyncio
streams, storage/http_server.py) on a background loop, read with plain HTTP, raw sockets and
ipfsspec's own CAR reader (which checks every block's hash)."""

import asyncio
import contextlib
import hashlib
import http.client
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from ipfsspec.car import read_car

from bacalhau_flow.errors import BflowError
from bacalhau_flow.storage import ContentStore, http_server, unixfs
from bacalhau_flow.storage.gateway import Gateway
from bacalhau_flow.testing.gateway import gateway_in_thread

BIG = 3 * 2**20 + 12345  # 13 leaves of 256 KiB and a partial one: a multi-block file


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway")
    src = tmp / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n")
    (src / "sub" / "big.bin").write_bytes(os.urandom(BIG))
    (src / "sub" / "deeper" / "c.csv").write_text("x,y\n1,2\n")
    (src / "sub" / "a b ü.txt").write_text("spaced\n")
    store = ContentStore(tmp / "store")
    root = store.put_tree(src)
    with gateway_in_thread(store) as url:
        yield {"url": url, "root": root, "src": src, "store": store}


def fetch(url, method="GET", headers=None, redirect=True):
    """(status, headers, body) of one request; HTTP errors are answers, not exceptions."""
    opener = urllib.request.build_opener() if redirect else urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def cid_of(store, root, path):
    cid = root
    for name in path.split("/"):
        cid = next(e.cid for e in store.ls(cid) if e.name == name)
    return cid


def test_file_has_its_bytes_length_roots_and_immutable_caching(served):
    url, root, store = served["url"], served["root"], served["store"]
    status, headers, body = fetch(f"{url}/ipfs/{root}/a.txt")
    assert status == 200 and body == b"hello\n"
    assert headers["Content-Length"] == "6"
    assert headers["X-Ipfs-Roots"].split(",") == [root, cid_of(store, root, "a.txt")]
    assert "immutable" in headers["Cache-Control"]
    assert headers["Etag"] == f'"{cid_of(store, root, "a.txt")}"'


def test_a_3mb_multi_block_file_comes_back_byte_exact(served):
    status, headers, body = fetch(f"{served['url']}/ipfs/{served['root']}/sub/big.bin")
    assert status == 200 and int(headers["Content-Length"]) == BIG
    assert hashlib.sha256(body).digest() == hashlib.sha256((served["src"] / "sub" / "big.bin").read_bytes()).digest()


def test_range_across_a_block_boundary_reads_just_those_bytes(served):
    data = (served["src"] / "sub" / "big.bin").read_bytes()
    status, headers, body = fetch(f"{served['url']}/ipfs/{served['root']}/sub/big.bin",
                                  headers={"Range": "bytes=262000-262999"})
    assert status == 206 and body == data[262000:263000]
    assert headers["Content-Range"] == f"bytes 262000-262999/{BIG}"
    assert fetch(f"{served['url']}/ipfs/{served['root']}/sub/big.bin", headers={"Range": "bytes=-10"})[2] == data[-10:]
    assert fetch(f"{served['url']}/ipfs/{served['root']}/sub/big.bin",
                 headers={"Range": f"bytes={BIG}-"})[0] == 416


def test_head_gives_the_headers_without_a_body(served):
    status, headers, body = fetch(f"{served['url']}/ipfs/{served['root']}/sub/big.bin", method="HEAD")
    assert status == 200 and headers["Content-Length"] == str(BIG) and body == b""


def test_raw_format_is_one_block_by_query_or_accept_header(served):
    url, root, store = served["url"], served["root"], served["store"]
    big = cid_of(store, root, "sub/big.bin")
    for suffix, headers in (("?format=raw", {}), ("", {"Accept": "application/vnd.ipld.raw"})):
        status, answer, body = fetch(f"{url}/ipfs/{root}/sub/big.bin{suffix}", headers=headers)
        assert status == 200 and answer["Content-Type"] == "application/vnd.ipld.raw"
        assert body == store.get_block(big)  # the file's root node, not its bytes
        assert unixfs.block_matches(unixfs.parse_cid(big), body)


def test_car_block_scope_holds_the_path_and_the_terminal_block(served):
    url, root, store = served["url"], served["root"], served["store"]
    status, headers, body = fetch(f"{url}/ipfs/{root}/sub/deeper/c.csv?format=car&dag-scope=block")
    assert status == 200 and headers["Content-Type"].startswith("application/vnd.ipld.car")
    path_cids = [root, cid_of(store, root, "sub"), cid_of(store, root, "sub/deeper"), cid_of(store, root, "sub/deeper/c.csv")]
    assert headers["X-Ipfs-Roots"].split(",") == path_cids
    roots, blocks = read_car(body)  # raises if any block does not hash to its CID
    assert [c.encode("base32") for c in roots] == [path_cids[-1]]
    assert [c.encode("base32") for c, _, _ in blocks] == path_cids


def test_car_all_scope_by_accept_header_holds_every_block_of_the_file(served):
    url, root, store = served["url"], served["root"], served["store"]
    big = cid_of(store, root, "sub/big.bin")
    status, headers, body = fetch(f"{url}/ipfs/{big}", headers={"Accept": "application/vnd.ipld.car"})
    assert status == 200 and headers["X-Ipfs-Roots"] == big
    _, blocks = read_car(body)
    got = [(c.encode("base32"), data) for c, data, _ in blocks]
    assert [c for c, _ in got] == list(store.blocks_of(big))  # parents first, in link order
    assert len(got) == 1 + 13  # one root node, 13 leaves
    assert b"".join(data for _, data in got[1:]) == (served["src"] / "sub" / "big.bin").read_bytes()


def test_car_entity_scope_of_a_directory_is_its_own_block(served):
    url, root = served["url"], served["root"]
    _, blocks = read_car(fetch(f"{url}/ipfs/{root}?format=car&dag-scope=entity")[2])
    assert [c.encode("base32") for c, _, _ in blocks] == [root]


def test_directory_redirects_to_a_slash_then_lists_its_entries(served):
    url, root = served["url"], served["root"]
    status, headers, _ = fetch(f"{url}/ipfs/{root}/sub", redirect=False)
    assert status == 301 and headers["Location"].endswith(f"/ipfs/{root}/sub/")
    status, headers, body = fetch(f"{url}/ipfs/{root}/sub/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'href="big.bin"' in body and b'href="deeper/"' in body


@pytest.mark.parametrize("path, status", [
    ("not-a-cid", 400),
    ("{root}?format=zip", 400),
    ("{root}?format=car&dag-scope=most", 400),
    ("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", 404),  # a CID this store lacks
    ("{root}/no-such-name", 404),
    ("{root}/a.txt/below-a-file", 404),
])
def test_bad_cids_are_400_and_what_the_store_lacks_is_404(served, path, status):
    assert fetch(f"{served['url']}/ipfs/{path.format(root=served['root'])}")[0] == status


def test_a_block_found_corrupt_mid_file_cuts_the_answer_short(tmp_path):
    store = ContentStore(tmp_path / "store")
    data = os.urandom(2 * 2**20)
    cid = store.put_bytes(data)
    leaf = [c for c in store.blocks_of(cid) if c != cid][3]
    block = store.blocks / leaf[-2:] / leaf
    block.write_bytes(b"X" + block.read_bytes()[1:])

    async def read():
        import aiohttp

        gateway = Gateway(store)
        url = await gateway.start()
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{url}/ipfs/{cid}") as r:
                    assert r.status == 200  # the headers went out before the bad block was read
                    return await r.read()
        finally:
            await gateway.stop()

    with pytest.raises(Exception, match="not completed|Not enough data"):
        asyncio.run(read())


# ------------------------------------------------------------------------------- HTTP/1.1

def connect(url) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)


def raw_exchange(url, data: bytes, wait: float = 10, source: str = "127.0.0.1") -> bytes:
    """Send `data` on a fresh socket from `source` (any 127/8 address is this machine);
    everything that comes back until the server closes it."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait, source_address=(source, 0)) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def test_one_connection_serves_two_requests_and_drains_a_request_body(served):
    url, root = served["url"], served["root"]
    conn = connect(url)
    conn.request("GET", f"/ipfs/{root}/a.txt", body=b"ignored body", headers={"Content-Length": "12"})
    first = conn.getresponse()
    assert first.status == 200 and first.read() == b"hello\n"
    sock = conn.sock
    conn.request("GET", f"/ipfs/{root}/sub/big.bin", headers={"Range": "bytes=0-9"})
    second = conn.getresponse()
    assert second.status == 206 and len(second.read()) == 10
    assert conn.sock is sock and sock is not None  # the same TCP connection, kept alive
    conn.close()


def test_head_of_a_car_has_its_headers_no_body_and_keeps_the_connection(served):
    url, root = served["url"], served["root"]
    conn = connect(url)
    conn.request("HEAD", f"/ipfs/{root}?format=car")
    head = conn.getresponse()
    assert head.status == 200 and head.headers["Content-Type"].startswith("application/vnd.ipld.car")
    assert head.headers["X-Ipfs-Roots"] == root and head.read() == b""
    conn.request("GET", f"/ipfs/{root}?format=car&dag-scope=entity")
    car = conn.getresponse()
    assert car.headers["Transfer-Encoding"] == "chunked"  # a stream of unknown length
    _, blocks = read_car(car.read())
    assert [c.encode("base32") for c, _, _ in blocks] == [root]
    conn.close()


def test_an_http10_client_gets_a_car_ended_by_closing_the_connection(served):
    answer = raw_exchange(served["url"], f"GET /ipfs/{served['root']}?format=car HTTP/1.0\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head and b"chunked" not in head
    roots, _ = read_car(body)
    assert [c.encode("base32") for c in roots] == [served["root"]]


def test_percent_encoded_names_are_decoded(served):
    url, root = served["url"], served["root"]
    status, _, body = fetch(f"{url}/ipfs/{root}/sub/{urllib.parse.quote('a b ü.txt')}")
    assert status == 200 and body == b"spaced\n"
    assert b'href="a%20b%20%C3%BC.txt"' in fetch(f"{url}/ipfs/{root}/sub/")[2]


def test_other_methods_are_405_and_other_paths_404(served):
    url, root = served["url"], served["root"]
    status, headers, _ = fetch(f"{url}/ipfs/{root}/a.txt", method="DELETE")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert fetch(f"{url}/ipns/{root}")[0] == 404
    assert fetch(f"{url}/ipfs/")[0] == 404
    assert fetch(f"{url}/n/some-node/ipfs/{root}")[0] == 404  # one store, not several


def test_if_none_match_is_304(served):
    url, root = served["url"], served["root"]
    etag = fetch(f"{url}/ipfs/{root}/a.txt")[1]["Etag"]
    status, _, body = fetch(f"{url}/ipfs/{root}/a.txt", headers={"If-None-Match": etag})
    assert status == 304 and body == b""


@pytest.mark.parametrize("fields", [
    f"X-Big: {'x' * (http_server.MAX_HEAD + 1)}\r\n",  # one line past the bound
    "".join(f"X-Many-{i}: {'y' * 100}\r\n" for i in range(http_server.MAX_HEAD // 100)),  # many short ones
])
def test_an_oversized_header_is_431_and_the_connection_closes(served, fields):
    answer = raw_exchange(served["url"], f"GET /ipfs/{served['root']} HTTP/1.1\r\n{fields}\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 431") and b"Connection: close" in answer


def test_a_bad_request_line_is_400_and_the_connection_closes(served):
    answer = raw_exchange(served["url"], b"GARBAGE\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1") == 1


def test_a_slow_request_head_and_an_idle_connection_are_dropped(served, monkeypatch):
    monkeypatch.setattr(http_server, "HEAD_TIMEOUT_S", 0.3)
    monkeypatch.setattr(http_server, "IDLE_TIMEOUT_S", 0.3)
    started = time.monotonic()
    assert raw_exchange(served["url"], f"GET /ipfs/{served['root']} HTTP/1.1\r\nX-Slow: ".encode()) == b""
    assert raw_exchange(served["url"], b"") == b""  # never sends a request
    assert time.monotonic() - started < 5


def held_open(url, source: str = "127.0.0.1") -> socket.socket:
    """A connection from `source` (any 127/8 address is this machine) that sends nothing."""
    parts = urllib.parse.urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10, source_address=(source, 0))


def turned_away(answer: bytes) -> bool:
    return answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer and b"Connection: close" in answer


def fetch_from(url, root, source: str) -> bytes:
    answer = raw_exchange(url, f"GET /ipfs/{root}/a.txt HTTP/1.1\r\nConnection: close\r\n\r\n".encode(), source=source)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def test_connections_past_the_caps_get_503_and_others_are_still_served(served, monkeypatch):
    """A peer that opens connections and sends nothing cannot take them all: past MAX_PER_PEER
    from one address, or MAX_CONNECTIONS in all, a new one is answered 503 and closed, the
    server goes on serving others, and a freed place serves again."""
    monkeypatch.setattr(http_server, "MAX_PER_PEER", 2)
    monkeypatch.setattr(http_server, "MAX_CONNECTIONS", 3)
    url, root = served["url"], served["root"]
    request = f"GET /ipfs/{root}/a.txt HTTP/1.1\r\nConnection: close\r\n\r\n".encode()
    hogs = [held_open(url), held_open(url)]
    time.sleep(0.2)  # accepted and counted
    try:
        assert turned_away(raw_exchange(url, request))  # a third from the same address
        assert fetch_from(url, root, "127.0.0.2") == b"hello\n"  # another address is served
        hogs.append(held_open(url, "127.0.0.2"))
        time.sleep(0.2)
        assert turned_away(raw_exchange(url, request, source="127.0.0.3"))  # 3 in all: no one new
    finally:
        for sock in hogs:
            sock.close()
    time.sleep(0.3)  # the server sees them close
    assert fetch(f"{url}/ipfs/{root}/a.txt")[2] == b"hello\n"


@contextlib.contextmanager
def loop_thread():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_one_gateway_serves_several_nodes_stores_under_their_ids(tmp_path):
    store = ContentStore(tmp_path / "a")
    cid = store.put_bytes(b"node a's bytes")
    with loop_thread() as run:
        gateway = Gateway(None, stores={"node-a": store})
        run(gateway.start())
        try:
            assert gateway.url_for("node-a") == f"{gateway.url}/n/node-a"
            assert fetch(f"{gateway.url_for('node-a')}/ipfs/{cid}")[2] == b"node a's bytes"
            status, _, body = fetch(f"{gateway.url_for('node-b')}/ipfs/{cid}")
            assert status == 404 and body == b"no node node-b here\n"
            assert fetch(f"{gateway.url}/ipfs/{cid}")[0] == 404  # no store of its own
        finally:
            run(gateway.stop())


def test_stop_closes_kept_alive_connections_and_a_taken_port_is_a_clear_error(tmp_path):
    store = ContentStore(tmp_path / "s")
    cid = store.put_bytes(b"x")
    with loop_thread() as run:
        gateway = Gateway(store)
        url = run(gateway.start())
        conn = connect(url)
        conn.request("GET", f"/ipfs/{cid}")
        assert conn.getresponse().read() == b"x"
        with pytest.raises(BflowError, match="cannot serve an IPFS gateway") as info:
            run(Gateway(store, port=gateway.port).start())
        assert "another port" in info.value.hint
        run(gateway.stop())
        assert conn.sock.recv(1) == b""  # closed by the server
        conn.close()
