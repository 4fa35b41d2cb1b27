"""UnixFS CIDs must be the ones kubo computes: pinned with CIDs published by kubo itself.

Sources of the vectors (all outputs of a real kubo, not of this code):
- kubo test/cli/add_test.go and test/cli/cid_profiles_test.go: "hello world", and files of
  pseudo-random bytes from `testutils.DeterministicRandomReader` (ChaCha20 keyed by
  sha256(seed), zero nonce), re-created here with `cryptography`'s ChaCha20;
- kubo test/sharness/t0114..t0118 README.md: directories made with `ipfs add -r --cid-version 1`.
"""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path

import pytest

from bacalhau_flow.errors import ContentError
from bacalhau_flow.storage import unixfs
from bacalhau_flow.storage.unixfs import (
    DAG_PB,
    RAW,
    TYPE_DIRECTORY,
    TYPE_FILE,
    bytes_cid,
    cid_codec,
    decode_pbnode,
    decode_unixfs,
    file_cid,
    import_file,
    import_tree,
    parse_cid,
    tree_cid,
)

KiB, MiB = 1024, 1024 * 1024
EMPTY_FILE = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
EMPTY_DIR = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
SLOW = pytest.mark.skipif(not os.environ.get("BFLOW_SLOW_TESTS"), reason="set BFLOW_SLOW_TESTS=1 (GiB-sized vectors)")


class KuboDeterministicBytes(io.RawIOBase):
    """The byte stream of kubo's testutils.DeterministicRandomReaderBytes(size, seed)."""

    def __init__(self, seed: str, size: int):
        ciphers = pytest.importorskip("cryptography.hazmat.primitives.ciphers")
        key = hashlib.sha256(seed.encode()).digest()
        # 16-byte nonce = 32-bit block counter 0 + 96-bit nonce 0, as Go's chacha20 with a zero nonce
        self._cipher = ciphers.Cipher(ciphers.algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._left)
        buffer[:n] = self._cipher.update(bytes(n))
        self._left -= n
        return n


class Zeros(io.RawIOBase):
    """`size` zero bytes, produced on demand."""

    def __init__(self, size: int):
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._left)
        buffer[:n] = bytes(n)
        self._left -= n
        return n


def write_tree(root: Path, files: dict[str, str | None]) -> Path:
    """Create files (text) and, for a None value, empty directories under root."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = root / rel
        if text is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return root


def collect_blocks(stream, **options) -> tuple[unixfs.DagRef, dict[bytes, bytes]]:
    blocks: dict[bytes, bytes] = {}
    root = import_file(stream, lambda cid, block: blocks.__setitem__(cid, bytes(block)), **options)
    return root, blocks


def leaf_depths(cid: bytes, blocks: dict[bytes, bytes], depth: int = 0) -> list[int]:
    if cid_codec(cid) == RAW:
        return [depth]
    return [d for link in decode_pbnode(blocks[cid]).links for d in leaf_depths(link.cid, blocks, depth + 1)]


# ------------------------------------------------------------ single-block files


def test_empty_file_is_the_empty_raw_leaf():
    assert bytes_cid(b"") == EMPTY_FILE


@pytest.mark.parametrize(
    ("content", "cid"),
    [
        (b"hello world", "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),  # add_test.go
        (b"hello\n", "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"),  # t0114, t0116
        (b"Hello IPFS\n", "bafkreidfdrlkeq4m4xnxuyx6iae76fdm4wgl5d4xzsb77ixhyqwumhz244"),  # t0124
    ],
)
def test_small_file_is_a_raw_leaf_with_kubo_cid(content, cid):
    assert bytes_cid(content) == cid


def test_file_of_exactly_one_chunk_is_still_a_raw_leaf():
    data = os.urandom(unixfs.CHUNK_SIZE)
    assert bytes_cid(data) == unixfs.cid_to_str(unixfs.raw_cid(data))


def test_legacy_dag_pb_leaves_match_kubo_for_hello_world():
    assert bytes_cid(b"hello world", raw_leaves=False, cid_version=0) == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
    assert bytes_cid(b"hello world", raw_leaves=False) == "bafybeihykld7uyxzogax6vgyvag42y7464eywpf55gxi5qpoisibh3c5wa"


# ------------------------------------------------------------ multi-chunk files (kubo vectors)


@pytest.mark.parametrize(
    ("seed", "size", "options", "cid"),
    [
        # test-cid-v1 profile: CIDv1, raw leaves, 1 MiB chunks, 174 links (add_test.go)
        ("v1-seed", 174 * MiB, {"chunk_size": MiB}, "bafybeigwduxcf2aawppv3isnfeshnimkyplvw3hthxjhr2bdeje4tdaicu"),
        ("v1-seed", 175 * MiB, {"chunk_size": MiB}, "bafybeidhd7lo2n2v7lta5yamob3xwhbxcczmmtmhquwhjesi35jntf7mpu"),
        # legacy-cid-v0 profile: 256 KiB chunks, 174 links, dag-pb leaves (add_test.go)
        ("v0-seed", 44544 * KiB, {"raw_leaves": False, "cid_version": 0}, "QmUbBALi174SnogsUzLpYbD4xPiBSFANF4iztWCsHbMKh2"),
        ("v0-seed", 44800 * KiB, {"raw_leaves": False, "cid_version": 0}, "QmepeWtdmS1hHXx1oZXsPUv6bMrfRRKfZcoPPU4eEfjnbf"),
    ],
    ids=["174-chunks-one-level", "175-chunks-two-levels", "legacy-174-chunks", "legacy-175-chunks"],
)
def test_multi_chunk_file_matches_kubo(seed, size, options, cid):
    assert import_file(KuboDeterministicBytes(seed, size), **options).cid_str == cid


@SLOW
@pytest.mark.parametrize(
    ("seed", "size", "options", "cid"),
    [
        ("hello world", 256 * MiB, {"raw_leaves": False, "cid_version": 0, "max_links": 1024},
         "QmbBftNHWmjSWKLC49dMVrfnY8pjrJYntiAXirFJ7oJrNk"),
        ("v1-2025-seed", 1024 * MiB, {"chunk_size": MiB, "max_links": 1024},
         "bafybeihmf37wcuvtx4hpu7he5zl5qaf2ineo2lqlfrapokkm5zzw7zyhvm"),
        ("v1-2025-seed", 1025 * MiB, {"chunk_size": MiB, "max_links": 1024},
         "bafybeihmzokxxjqwxjcryerhp5ezpcog2wcawfryb2xm64xiakgm4a5jue"),
    ],
)
def test_gib_sized_file_matches_kubo(seed, size, options, cid):
    assert import_file(KuboDeterministicBytes(seed, size), **options).cid_str == cid


# ------------------------------------------------------------ file layout


def test_one_byte_past_a_chunk_makes_a_root_over_two_raw_leaves():
    root, blocks = collect_blocks(io.BytesIO(bytes(unixfs.CHUNK_SIZE + 1)))
    node = decode_pbnode(blocks[root.cid])
    data = decode_unixfs(node.data)
    assert cid_codec(root.cid) == DAG_PB
    assert (data.type, data.filesize, data.blocksizes) == (TYPE_FILE, unixfs.CHUNK_SIZE + 1, [unixfs.CHUNK_SIZE, 1])
    assert [cid_codec(link.cid) for link in node.links] == [RAW, RAW]
    assert [(link.name, link.tsize) for link in node.links] == [(b"", unixfs.CHUNK_SIZE), (b"", 1)]


def test_tsize_is_the_cumulative_serialized_size_of_the_dag():
    root, blocks = collect_blocks(Zeros(3 * unixfs.CHUNK_SIZE + 5))
    assert root.tsize == len(blocks[root.cid]) + 3 * unixfs.CHUNK_SIZE + 5
    assert root.size == 3 * unixfs.CHUNK_SIZE + 5


def test_max_links_chunks_fit_under_one_node():
    root, blocks = collect_blocks(io.BytesIO(bytes(range(174)) * 10), chunk_size=10)
    node = decode_pbnode(blocks[root.cid])
    assert len(node.links) == 174
    assert decode_unixfs(node.data).blocksizes == [10] * 174
    assert set(leaf_depths(root.cid, blocks)) == {1}


def test_one_chunk_past_max_links_adds_a_level_with_every_leaf_at_the_same_depth():
    root, blocks = collect_blocks(io.BytesIO(os.urandom(175 * 10)), chunk_size=10)
    top = decode_pbnode(blocks[root.cid])
    first, second = (decode_pbnode(blocks[link.cid]) for link in top.links)
    assert (len(top.links), len(first.links), len(second.links)) == (2, 174, 1)
    assert decode_unixfs(top.data).blocksizes == [1740, 10]
    assert set(leaf_depths(root.cid, blocks)) == {2}


def test_175_real_chunks_need_two_levels():
    root, blocks = collect_blocks(Zeros(175 * unixfs.CHUNK_SIZE))
    top = decode_pbnode(blocks[root.cid])
    assert [len(decode_pbnode(blocks[link.cid]).links) for link in top.links] == [174, 1]
    assert decode_unixfs(top.data).filesize == 175 * unixfs.CHUNK_SIZE


def test_third_level_appears_past_max_links_squared_chunks():
    root, blocks = collect_blocks(io.BytesIO(bytes(4 * 4 + 1)), chunk_size=1, max_links=4)
    assert set(leaf_depths(root.cid, blocks)) == {3}
    assert len(decode_pbnode(blocks[root.cid]).links) == 2


def test_import_file_streams_with_bounded_memory():
    tracemalloc.start()
    try:
        import_file(Zeros(64 * MiB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * unixfs.CHUNK_SIZE


def test_file_cid_reads_a_path(tmp_path):
    (tmp_path / "f").write_bytes(b"hello world")
    assert file_cid(tmp_path / "f") == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


# ------------------------------------------------------------ directories (kubo vectors)


def test_empty_directory_has_kubo_cid(tmp_path):
    assert tree_cid(write_tree(tmp_path / "empty", {})) == EMPTY_DIR


TESTDIRLISTING = {  # t0114-gateway-subdomains
    "hello": "hello\n",
    "ipfs/ipns/bar": "text-file-content\n",
    "api/file.txt": "I am a txt file\n",
    "ipfs/file.txt": "I am a txt file\n",
}
UTF8_ROOTDIR = {  # t0115-gateway-dir-listing, t0122-gateway-tar
    "ą/ę/file-źł.txt": "I am a txt file on path with utf8\n",
    "api/file.txt": "I am a txt file in confusing /api dir\n",
    "ipfs/file.txt": "I am a txt file in confusing /ipfs dir\n",
    "ipns/file.txt": "I am a txt file in confusing /ipns dir\n",
}


@pytest.mark.parametrize(
    ("files", "cid"),
    [
        (TESTDIRLISTING, "bafybeiht6dtwk3les7vqm6ibpvz6qpohidvlshsfyr7l5mpysdw2vmbbhe"),
        (UTF8_ROOTDIR, "bafybeig6ka5mlwkl4subqhaiatalkcleo4jgnr3hqwvpmsqfca27cijp3i"),
        # `ipfs add -rw` wraps the folder in one more directory (t0116, t0117, t0118)
        ({"root2/root3/root4/index.html": "hello\n"}, "bafybeib3ffl2teiqdncv3mkz4r23b5ctrwkzrrhctdbne6iboayxuxk5ui"),
        ({"dir/ascii.txt": "hello application/vnd.ipld.raw\n"}, "bafybeie72edlprgtlwwctzljf6gkn2wnlrddqjbkxo3jomh4n7omwblxly"),
        ({"subdir/ascii.txt": "hello application/vnd.ipld.car\n"}, "bafybeiefu3d7oytdumk5v7gn6s7whpornueaw7m7u46v2o6omsqcrhhkzi"),
    ],
    ids=["testdirlisting", "utf8-names", "wrapped-nested", "wrapped-raw", "wrapped-car"],
)
def test_directory_matches_kubo(tmp_path, files, cid):
    assert tree_cid(write_tree(tmp_path / "root", files)) == cid


def test_subdirectories_match_kubo(tmp_path):
    root = write_tree(tmp_path / "root", {"root2/root3/root4/index.html": "hello\n"})  # t0116
    assert tree_cid(root / "root2") == "bafybeih2w7hjocxjg6g2ku25hvmd53zj7og4txpby3vsusfefw5rrg5sii"
    assert tree_cid(root / "root2/root3") == "bafybeiawdvhmjcz65x5egzx4iukxc72hg4woks6v6fvgyupiyt3oczk5ja"
    assert tree_cid(root / "root2/root3/root4") == "bafybeifq2rzpqnqrsdupncmkmhs3ckxxjhuvdcbvydkgvch3ms24k5lo7q"
    assert tree_cid(root / "root2/root3/root4/index.html") == "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"


def test_flat_directory_of_4766_entries_matches_kubo(tmp_path):
    # cid_profiles_test.go, unixfs-v1-2025 "dir-basic": names from DeterministicRandomReader("1MiB",
    # "hamt-unixfs-v1-2025") mapped onto AlphabetEasy; each file holds "x"; the block is 262144 bytes.
    alphabet = "abcdefghijklmnopqrstuvwxyz01234567890-_"
    stream = KuboDeterministicBytes("hamt-unixfs-v1-2025", MiB)
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(4766):
        raw = bytearray(21 if i == 4765 else 11)
        stream.readinto(raw)
        (root / "".join(alphabet[b % len(alphabet)] for b in raw)).write_bytes(b"x")
    result = import_tree(root)
    assert result.root.cid_str == "bafybeic3h7rwruealwxkacabdy45jivq2crwz6bufb5ljwupn36gicplx4"
    assert result.root.tsize == 262144 + 4766


# ------------------------------------------------------------ directory structure


def test_directory_links_are_sorted_bytewise_with_child_tsize(tmp_path):
    root = write_tree(tmp_path / "d", {"b": "2", "B": "1", "é": "4", "a-c/x": "5", "a": "3"})
    blocks: dict[bytes, bytes] = {}
    ref = import_tree(root, lambda cid, block: blocks.__setitem__(cid, bytes(block))).root
    node = decode_pbnode(blocks[ref.cid])
    assert [link.name for link in node.links] == [b"B", b"a", b"a-c", b"b", "é".encode()]
    assert decode_unixfs(node.data).type == TYPE_DIRECTORY
    sub = next(link for link in node.links if link.name == b"a-c")
    assert sub.tsize == len(blocks[sub.cid]) + 1
    assert ref.tsize == len(blocks[ref.cid]) + sum(link.tsize for link in node.links)


def test_a_tree_nested_past_max_depth_is_refused_clearly_and_one_at_it_is_stored(tmp_path):
    at_limit = tmp_path / "ok"
    (at_limit / "/".join(["d"] * unixfs.MAX_DEPTH)).mkdir(parents=True)
    assert unixfs.import_tree(at_limit).root.cid_str
    too_deep = tmp_path / "deep"
    (too_deep / "/".join(["d"] * (unixfs.MAX_DEPTH + 1))).mkdir(parents=True)
    with pytest.raises(unixfs.TooDeep, match=f"nested more than {unixfs.MAX_DEPTH} deep") as info:
        unixfs.import_tree(too_deep)
    assert not info.value.retryable


def test_hidden_files_and_empty_directories_are_kept(tmp_path):
    with_hidden = tree_cid(write_tree(tmp_path / "a", {".env": "x", "keep": None}))
    assert with_hidden != tree_cid(write_tree(tmp_path / "b", {"keep": None}))
    assert with_hidden != EMPTY_DIR


def test_single_file_tree_is_the_file_cid(tmp_path):
    (tmp_path / "f").write_bytes(b"hello\n")
    assert tree_cid(tmp_path / "f") == "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"


def test_symlinks_are_skipped_not_followed(tmp_path):
    outside = write_tree(tmp_path / "outside", {"secret": "do not read"})
    tree = write_tree(tmp_path / "tree", dict(TESTDIRLISTING))
    os.symlink(outside / "secret", tree / "file-link")
    os.symlink(outside, tree / "api" / "dir-link")
    os.symlink(tmp_path / "missing", tree / "dangling")
    read: list[bytes] = []
    result = import_tree(tree, lambda cid, block: read.append(bytes(block)))
    assert result.root.cid_str == "bafybeiht6dtwk3les7vqm6ibpvz6qpohidvlshsfyr7l5mpysdw2vmbbhe"
    assert sorted(result.skipped) == ["api/dir-link", "dangling", "file-link"]
    assert not any(b"do not read" in block for block in read)


def test_special_files_are_skipped(tmp_path):
    tree = write_tree(tmp_path / "tree", {"a": "1"})
    os.mkfifo(tree / "pipe")
    result = import_tree(tree)
    assert result.skipped == ["pipe"]


def test_a_symlink_given_as_the_tree_is_refused(tmp_path):
    target = write_tree(tmp_path / "real", {"a": "1"})
    os.symlink(target, tmp_path / "link")
    with pytest.raises(ContentError, match="symlink"):
        import_tree(tmp_path / "link")


def test_a_missing_tree_raises_content_error(tmp_path):
    with pytest.raises(ContentError, match="cannot read"):
        import_tree(tmp_path / "nope")


# ------------------------------------------------------------ CIDs and codecs


def test_parse_cid_turns_cidv0_into_the_cidv1_equivalent():
    v1 = parse_cid("QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN")  # t0114: CIDv0to1
    assert unixfs.cid_to_str(v1) == "bafybeiffndsajwhk3lwjewwdxqntmjm4b5wxaaanokonsggenkbw6slwk4"
    assert unixfs.cid_to_str(parse_cid(EMPTY_FILE)) == EMPTY_FILE


@pytest.mark.parametrize("text", ["", "hello", "bafy", "Qm123", "b" + "a" * 58])
def test_parse_cid_rejects_what_is_not_a_cid(text):
    with pytest.raises(ContentError, match="not a valid CID"):
        parse_cid(text)


def test_pbnode_encoding_round_trips():
    link = unixfs.encode_pblink(parse_cid(EMPTY_FILE), "ünï".encode(), 300)
    data = unixfs.encode_unixfs(TYPE_FILE, filesize=1 << 40, blocksizes=[1, 1 << 20])
    node = decode_pbnode(unixfs.encode_pbnode([link], data))
    assert [(lk.cid, lk.name, lk.tsize) for lk in node.links] == [(parse_cid(EMPTY_FILE), "ünï".encode(), 300)]
    assert decode_unixfs(node.data) == unixfs.UnixFSData(TYPE_FILE, None, 1 << 40, [1, 1 << 20])


def test_malformed_pbnode_is_a_value_error():
    with pytest.raises(ValueError):
        decode_pbnode(b"\x12\x05\x0a")
