"""CARv1 as blocks travel between machines: what car_header/car_block write, read_car reads
back section by section; a stream cut short or rooted elsewhere is a ContentError."""

import io
import os

import pytest

from bacalhau_flow.errors import ContentError
from bacalhau_flow.storage import ContentStore, unixfs
from bacalhau_flow.storage.car import car_block, car_header, read_car


@pytest.fixture
def dag(tmp_path):
    """A small tree (a multi-block file among them) in a store: (root CID, [(binary CID, block)])."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n")
    (src / "sub" / "big.bin").write_bytes(os.urandom(3 * unixfs.CHUNK_SIZE + 17))
    store = ContentStore(tmp_path / "store")
    root = store.put_tree(src)
    blocks = [(unixfs.parse_cid(c), store.get_block(c)) for c in store.blocks_of(root)]
    return unixfs.parse_cid(root), blocks


def car_of(root: bytes, blocks) -> bytes:
    return car_header(root) + b"".join(car_block(cid, data) for cid, data in blocks)


def test_what_is_written_reads_back_block_for_block(dag):
    root, blocks = dag
    assert len(blocks) >= 7  # two directories, a file node, four leaves, a small file
    got = list(read_car(io.BytesIO(car_of(root, blocks)), root))
    assert got == blocks
    assert all(unixfs.block_matches(cid, data) for cid, data in got)
    assert list(read_car(io.BytesIO(car_of(root, blocks)))) == blocks  # no root asked: any root


def test_the_header_is_dag_cbor_naming_the_root():
    root = unixfs.raw_cid(b"x")
    header = car_header(root)
    body = header[1:]
    assert header[0] == len(body) and body.startswith(b"\xa2\x65roots\x81\xd8\x2a")
    assert b"\x00" + root in body and body.endswith(b"\x67version\x01")


def test_a_header_alone_is_an_empty_car(dag):
    root, _ = dag
    assert list(read_car(io.BytesIO(car_header(root)), root)) == []


@pytest.mark.parametrize("cut", [1, 3, 40, 200, -1])
def test_a_stream_cut_short_is_a_content_error(dag, cut):
    root, blocks = dag
    car = car_of(root, blocks)
    header = len(car_header(root))
    ends = {1: 1, 3: header + 1, 40: header + 40, 200: header + len(car_block(*blocks[0])) + 200, -1: len(car) - 1}
    with pytest.raises(ContentError, match="ended in the middle|header"):
        list(read_car(io.BytesIO(car[:ends[cut]]), root))


def test_an_empty_stream_is_not_a_car():
    with pytest.raises(ContentError):
        list(read_car(io.BytesIO(b"")))


def test_a_car_rooted_elsewhere_is_a_content_error(dag):
    root, blocks = dag
    other = unixfs.raw_cid(b"another block")
    with pytest.raises(ContentError, match=f"root is not {unixfs.cid_to_str(root)}"):
        list(read_car(io.BytesIO(car_of(other, blocks)), root))


def test_sections_are_not_verified_by_the_reader(dag):
    """read_car hands back what was sent; checking each block against its CID is the caller's job."""
    root, blocks = dag
    cid, data = blocks[-1]
    tampered = blocks[:-1] + [(cid, bytes([data[0] ^ 1]) + data[1:])]
    got = list(read_car(io.BytesIO(car_of(root, tampered)), root))
    assert got[-1][0] == cid and not unixfs.block_matches(*got[-1])


def test_an_oversized_section_is_refused_before_it_is_read(dag):
    root, _ = dag
    huge = unixfs._varint(64 << 20)  # says 64 MiB follow
    with pytest.raises(ContentError, match="larger than any block"):
        list(read_car(io.BytesIO(car_header(root) + huge + b"\x00" * 10), root))


def test_a_section_with_an_invalid_cid_is_a_content_error(dag):
    root, _ = dag
    with pytest.raises(ContentError, match="invalid CID|shorter than its CID"):
        list(read_car(io.BytesIO(car_header(root) + unixfs._varint(5) + b"\x01\x55\x12\x20\x00"), root))
