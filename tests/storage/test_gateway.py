"""The content store served as an IPFS trustless gateway: a real aiohttp server on a
background loop, read with plain HTTP and with ipfsspec's own CAR reader (which checks
every block's hash)."""

import asyncio
import hashlib
import os
import urllib.error
import urllib.request

import pytest
from ipfsspec.car import read_car

from bacalhau_flow.storage import ContentStore, unixfs
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
