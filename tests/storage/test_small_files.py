"""A file of one chunk is read and hashed at once (issue 13); the CIDs stay kubo's, whatever the
stream hands back per read, and `file_refs` gives each file's DAG as its folder links it."""

import io

import pytest

from bacalhau_flow.storage import CHUNK_SIZE, ContentStore, bytes_cid, import_file
from bacalhau_flow.storage.unixfs import cid_to_str, raw_cid

EMPTY = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # ipfs add --raw-leaves of ""


class Trickle(io.RawIOBase):
    """A stream that hands back at most `step` bytes per read, as a pipe may."""

    def __init__(self, data: bytes, step: int):
        self._data, self._pos, self._step = data, 0, step

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


@pytest.mark.parametrize("size", [0, 1, 1000, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 7])
def test_short_reads_give_the_same_cid(size):
    data = bytes(i % 251 for i in range(size))
    assert import_file(Trickle(data, 4099)).cid_str == bytes_cid(data)


@pytest.mark.parametrize("size", [0, 5, CHUNK_SIZE])
def test_one_chunk_is_its_raw_block(size):
    """Up to one whole chunk, a file is one raw block; one byte more and it is a dag-pb node."""
    data = b"z" * size
    assert bytes_cid(data) == cid_to_str(raw_cid(data))
    assert bytes_cid(b"") == EMPTY
    assert not bytes_cid(b"z" * CHUNK_SIZE + b"!").startswith("bafkrei")


def test_small_files_are_stored_and_read_back(tmp_path):
    store = ContentStore(tmp_path / "store")
    (tmp_path / "f").write_bytes(b"hello\n")
    cid = store.put_file(tmp_path / "f")
    assert cid == bytes_cid(b"hello\n") and store.cat(cid) == b"hello\n"


def test_file_refs_lists_each_file_with_its_link(tmp_path):
    tree = tmp_path / "t"
    (tree / "sub").mkdir(parents=True)
    (tree / "a").write_bytes(b"a")
    (tree / "sub" / "big").write_bytes(b"b" * (2 * CHUNK_SIZE))
    (tree / "sub" / "none").mkdir()
    store = ContentStore(tmp_path / "store")
    root = store.put_tree(tree)
    refs = store.file_refs(root)
    assert [p for p, _ in refs] == ["a", "sub/big"]
    assert [(p, ref.cid_str, ref.size) for p, ref in refs] == [(p, c, s) for p, c, s in store.iter_files(root)]
    links = {e.name: e for e in store.ls(root)}
    assert refs[0][1].tsize == 1 and refs[1][1].tsize > 2 * CHUNK_SIZE  # a root node's Tsize counts its leaves
    assert links["a"].cid == refs[0][1].cid_str
