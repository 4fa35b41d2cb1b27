"""ContentStore: blocks on disk keyed by CID, verified on every read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from multiformats import CID

from bacalhau_flow.errors import ContentError
from bacalhau_flow.storage import ContentStore, Entry, bytes_cid, tree_cid, unixfs

CHUNK = unixfs.CHUNK_SIZE
HELLO_WORLD = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
EMPTY_DIR = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
TESTDIRLISTING_CID = "bafybeiht6dtwk3les7vqm6ibpvz6qpohidvlshsfyr7l5mpysdw2vmbbhe"  # kubo t0114


@pytest.fixture
def store(tmp_path) -> ContentStore:
    return ContentStore(tmp_path / "store")


def write_tree(root: Path, files: dict[str, bytes | None]) -> Path:
    """Create files and, for a None value, empty directories under root."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        path = root / rel
        if data is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and empty directory (None) under root, by "/"-separated path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes() if path.is_file() else None
        for path in root.rglob("*")
        if path.is_file() or not any(path.iterdir())
    }


def block_path(store: ContentStore, cid: str) -> Path:
    return store.root / "blocks" / cid[-2:] / cid


MIXED_TREE = {
    "a/b/deep.txt": b"deep\n",
    "a/empty-file": b"",
    "big.bin": os.urandom(3 * CHUNK + 17),
    "zeros.bin": bytes(2 * CHUNK),
    "empty-dir": None,
    ".hidden": b"dot",
    "ünïcode name.txt": "hé\n".encode(),
}


# ------------------------------------------------------------ adding


def test_put_bytes_returns_the_unixfs_cid(store):
    assert store.put_bytes(b"hello world") == HELLO_WORLD
    assert store.cat(HELLO_WORLD) == b"hello world"


def test_put_file_stores_every_block_in_one_pass(store, tmp_path):
    data = os.urandom(2 * CHUNK + 1)
    (tmp_path / "f").write_bytes(data)
    cid = store.put_file(tmp_path / "f")
    assert cid == bytes_cid(data)
    blocks = list(store.blocks_of(cid))
    assert len(blocks) == 4 and all(store.has(b) for b in blocks)
    assert store.cat(cid) == data


def test_blocks_live_under_the_last_two_characters_of_their_cid(store):
    store.put_bytes(b"hello world")
    assert block_path(store, HELLO_WORLD).read_bytes() == b"hello world"


def test_writes_leave_no_temporary_files(store, tmp_path):
    store.put_tree(write_tree(tmp_path / "t", MIXED_TREE))
    leftovers = [p for p in (store.root / "blocks").rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []


def test_put_tree_gives_the_kubo_cid(store, tmp_path):
    tree = write_tree(tmp_path / "t", {
        "hello": b"hello\n", "ipfs/ipns/bar": b"text-file-content\n",
        "api/file.txt": b"I am a txt file\n", "ipfs/file.txt": b"I am a txt file\n",
    })
    assert store.put_tree(tree) == TESTDIRLISTING_CID


def test_put_tree_of_an_empty_directory(store, tmp_path):
    assert store.put_tree(write_tree(tmp_path / "t", {})) == EMPTY_DIR
    assert store.ls(EMPTY_DIR) == [] and list(store.iter_files(EMPTY_DIR)) == []


def test_put_tree_report_lists_symlinks_and_stores_nothing_behind_them(store, tmp_path):
    secret = os.urandom(100)
    outside = write_tree(tmp_path / "outside", {"secret": secret, "dir/inner": b"inner"})
    tree = write_tree(tmp_path / "t", {"real.txt": b"real"})
    os.symlink(outside / "secret", tree / "leak")
    os.symlink(outside / "dir", tree / "leakdir")
    cid, skipped = store.put_tree_report(tree)
    assert sorted(skipped) == ["leak", "leakdir"]
    assert [e.name for e in store.ls(cid)] == ["real.txt"]
    assert not store.has(bytes_cid(secret)) and not store.has(bytes_cid(b"inner"))
    assert cid == store.put_tree(tree)


def test_put_block_refuses_bytes_that_do_not_match_the_cid(store):
    with pytest.raises(ContentError, match=HELLO_WORLD):
        store.put_block(HELLO_WORLD, b"hello world!")
    assert not store.has(HELLO_WORLD)


def test_put_block_accepts_matching_bytes(store):
    store.put_block(HELLO_WORLD, b"hello world")
    assert store.has(HELLO_WORLD) and store.get_block(HELLO_WORLD) == b"hello world"


def test_blocks_copied_between_stores_rebuild_the_tree(store, tmp_path):
    cid = store.put_tree(write_tree(tmp_path / "t", MIXED_TREE))
    other = ContentStore(tmp_path / "other")
    for block in store.blocks_of(cid):
        other.put_block(block, store.get_block(block))
    other.export(cid, tmp_path / "out")
    assert read_tree(tmp_path / "out") == MIXED_TREE


# ------------------------------------------------------------ reading


def test_put_tree_then_export_gives_identical_bytes(store, tmp_path):
    cid = store.put_tree(write_tree(tmp_path / "t", MIXED_TREE))
    store.export(cid, tmp_path / "out")
    assert read_tree(tmp_path / "out") == MIXED_TREE
    assert tree_cid(tmp_path / "out") == cid


def test_export_of_a_single_file(store, tmp_path):
    data = os.urandom(CHUNK + 3)
    cid = store.put_bytes(data)
    store.export(cid, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == data


def test_export_into_an_existing_empty_directory(store, tmp_path):
    cid = store.put_tree(write_tree(tmp_path / "t", {"x": b"1"}))
    (tmp_path / "out").mkdir()
    store.export(cid, tmp_path / "out")
    assert (tmp_path / "out" / "x").read_bytes() == b"1"


def test_export_refuses_an_existing_destination(store, tmp_path):
    cid = store.put_tree(write_tree(tmp_path / "t", {"x": b"1"}))
    write_tree(tmp_path / "out", {"keep": b"mine"})
    with pytest.raises(ContentError, match="already exists"):
        store.export(cid, tmp_path / "out")
    assert read_tree(tmp_path / "out") == {"keep": b"mine"}


def test_ls_lists_names_cids_sizes_and_kinds(store, tmp_path):
    cid = store.put_tree(write_tree(tmp_path / "t", MIXED_TREE))
    entries = {e.name: e for e in store.ls(cid)}
    assert list(entries) == sorted(entries, key=str.encode)
    assert entries["big.bin"] == Entry("big.bin", bytes_cid(MIXED_TREE["big.bin"]), 3 * CHUNK + 17, False)
    assert entries["a"].is_dir and entries["empty-dir"].is_dir and entries["empty-dir"].cid == EMPTY_DIR
    assert entries[".hidden"].size == 3


def test_iter_files_walks_the_tree_sorted_by_path(store, tmp_path):
    cid = store.put_tree(write_tree(tmp_path / "t", {"a/b": b"1", "a-c": b"22", "a/z/y": b"", "0": b"4444"}))
    assert list(store.iter_files(cid)) == [
        ("0", bytes_cid(b"4444"), 4),
        ("a-c", bytes_cid(b"22"), 2),
        ("a/b", bytes_cid(b"1"), 1),
        ("a/z/y", bytes_cid(b""), 0),
    ]


def test_iter_file_yields_the_content_in_chunks(store):
    data = os.urandom(2 * CHUNK + 5)
    chunks = list(store.iter_file(store.put_bytes(data)))
    assert [len(c) for c in chunks] == [CHUNK, CHUNK, 5] and b"".join(chunks) == data


def test_open_file_reads_like_a_file(store):
    data = os.urandom(CHUNK + 100)
    with store.open_file(store.put_bytes(data)) as f:
        assert f.read(10) == data[:10]
        assert f.read() == data[10:]


def test_blocks_of_lists_each_block_once(store):
    cid = store.put_bytes(bytes(3 * CHUNK))  # three identical leaves
    blocks = list(store.blocks_of(cid))
    assert blocks == [cid, bytes_cid(bytes(CHUNK))]


def test_a_cidv0_finds_the_same_block(store, tmp_path):
    cid = store.put_tree(write_tree(tmp_path / "t", {"x": b"1"}))
    v0 = str(CID.decode(cid).set(version=0, base="base58btc"))
    assert v0.startswith("Qm") and store.has(v0) and store.ls(v0) == store.ls(cid)


def test_file_and_directory_cids_are_not_interchangeable(store, tmp_path):
    tree = store.put_tree(write_tree(tmp_path / "t", {"x": b"1"}))
    with pytest.raises(ContentError, match="not a file"):
        store.cat(tree)
    store.put_bytes(b"hello world")
    with pytest.raises(ContentError, match="not a directory"):
        store.ls(HELLO_WORLD)
    with pytest.raises(ContentError, match="not a directory"):
        list(store.iter_files(HELLO_WORLD))


# ------------------------------------------------------------ integrity


def test_get_block_detects_a_tampered_block_file(store):
    store.put_bytes(b"hello world")
    block_path(store, HELLO_WORLD).write_bytes(b"hello w0rld")
    with pytest.raises(ContentError, match=f"{HELLO_WORLD} is corrupt") as caught:
        store.get_block(HELLO_WORLD)
    assert str(block_path(store, HELLO_WORLD)) in caught.value.hint


def test_export_detects_a_tampered_leaf_and_leaves_nothing_behind(store, tmp_path):
    cid = store.put_tree(write_tree(tmp_path / "t", MIXED_TREE))
    leaf = bytes_cid(MIXED_TREE["big.bin"][CHUNK:2 * CHUNK])
    tampered = bytearray(block_path(store, leaf).read_bytes())
    tampered[100] ^= 1
    block_path(store, leaf).write_bytes(tampered)
    with pytest.raises(ContentError, match=leaf):
        store.export(cid, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_detects_a_tampered_directory_block(store, tmp_path):
    cid = store.put_tree(write_tree(tmp_path / "t", {"a/x": b"1"}))
    sub = store.ls(cid)[0].cid
    block = block_path(store, sub).read_bytes()
    block_path(store, sub).write_bytes(block.replace(b"x", b"y"))
    with pytest.raises(ContentError, match=sub):
        store.export(cid, tmp_path / "out")
    with pytest.raises(ContentError, match=sub):
        list(store.iter_files(cid))


@pytest.mark.parametrize("call", ["get_block", "cat", "ls", "iter_files", "export", "blocks_of", "iter_file"])
def test_a_missing_cid_raises_content_error_naming_it(store, tmp_path, call):
    missing = tree_cid(write_tree(tmp_path / "never-stored", {"x": b"1"}))
    args = (missing, tmp_path / "out") if call == "export" else (missing,)
    with pytest.raises(ContentError, match=f"{missing} is not in the content store"):
        result = getattr(store, call)(*args)
        if call in ("iter_files", "blocks_of", "iter_file"):
            list(result)  # generators raise on first use
    assert not store.has(missing) and not (tmp_path / "out").exists()


def test_blocks_of_lists_a_raw_leaf_without_needing_it(store):
    missing = bytes_cid(b"never stored")
    assert list(store.blocks_of(missing)) == [missing]
    with pytest.raises(ContentError, match=f"{missing} is not in the content store"):
        store.cat(missing)


def test_a_missing_child_block_is_named(store, tmp_path):
    cid = store.put_tree(write_tree(tmp_path / "t", {"a/x": b"1"}))
    sub = store.ls(cid)[0].cid
    block_path(store, sub).unlink()
    with pytest.raises(ContentError, match=f"{sub} is not in the content store"):
        store.export(cid, tmp_path / "out")


@pytest.mark.parametrize("text", ["not-a-cid", "", "QmNope"])
def test_an_invalid_cid_raises_content_error(store, text):
    with pytest.raises(ContentError, match="not a valid CID"):
        store.has(text)


@pytest.mark.parametrize("name", [b"..", b"../escape", b"a/b", b""])
def test_export_refuses_unsafe_entry_names(store, tmp_path, name):
    child = unixfs.parse_cid(store.put_bytes(b"payload"))
    block = unixfs.encode_pbnode([unixfs.encode_pblink(child, name, 7)], unixfs.encode_unixfs(unixfs.TYPE_DIRECTORY))
    cid = unixfs.cid_to_str(unixfs.dag_pb_cid(block))
    store.put_block(cid, block)
    with pytest.raises(ContentError, match="unsafe entry name"):
        store.export(cid, tmp_path / "out" / "inner")
    assert not (tmp_path / "out" / "escape").exists() and not (tmp_path / "out" / "inner").exists()
