"""The merge builds the job's tree from the shards' DAGs (issue 13): the same CID as storing the
merged folder, files linked rather than copied, and `conflict:` kept."""

import os

import pytest

from bacalhau_flow.errors import OutputConflict
from bacalhau_flow.jobs.results import merge_outputs
from bacalhau_flow.jobs.store import ShardRecord
from bacalhau_flow.storage import CHUNK_SIZE, ContentStore, tree_cid

BIG = bytes(range(256)) * (CHUNK_SIZE // 256) * 3 + b"tail"  # four chunks: a dag-pb file root


def write_tree(root, files: dict[str, bytes]):
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def shard(content, tmp_path, index, files: dict[str, bytes], state="completed"):
    return ShardRecord(index=index, id=f"sh-{index}", state=state, datums=[],
                       cid=content.put_tree(write_tree(tmp_path / f"shard{index}", files)))


def test_merged_cid_is_the_cid_of_the_merged_folder(tmp_path):
    content = ContentStore(tmp_path / "store")
    parts = [{"a/x.txt": b"x", "big.bin": BIG, "empty": b""},
             {"a/y.txt": b"y", "a/deeper/z": b"z" * 10},
             {"b/one": b"1", ".hidden": b"h"}]
    shards = [shard(content, tmp_path, i, files) for i, files in enumerate(parts)]
    merged = merge_outputs(content, shards, "error")
    expected = write_tree(tmp_path / "expected", {k: v for files in parts for k, v in files.items()})
    assert merged == tree_cid(expected)
    assert content.cat(dict((p, c) for p, c, _ in content.iter_files(merged))["big.bin"]) == BIG


def test_files_are_linked_not_copied(tmp_path):
    """Merging reads no file content: with the chunks of every output file gone from the store
    the merge still succeeds, and it adds only the new directory blocks."""
    content = ContentStore(tmp_path / "store")
    shards = [shard(content, tmp_path, i, {f"out/{i}.bin": BIG + bytes([i]), f"small{i}": b"s"}) for i in range(3)]
    leaves = {b for s in shards for b in content.blocks_of(s.cid) if b.startswith("bafkrei")}  # raw chunks
    for leaf in leaves:
        os.unlink(content.block_path(leaf))
    before = set(_blocks(content))
    merged = merge_outputs(content, shards, "error")
    added = set(_blocks(content)) - before
    assert len(added) == 2  # the root and out/
    assert set(content.blocks_of(merged)) <= before | added | leaves


def test_concat_of_multi_chunk_files_hashes_the_joined_file(tmp_path):
    content = ContentStore(tmp_path / "store")
    shards = [shard(content, tmp_path, i, {"same.bin": BIG + bytes([i]), f"own{i}": b"o"}) for i in range(3)]
    merged = merge_outputs(content, shards, "concat")
    joined = b"".join(BIG + bytes([i]) for i in range(3))
    expected = write_tree(tmp_path / "expected", {"same.bin": joined, "own0": b"o", "own1": b"o", "own2": b"o"})
    assert merged == tree_cid(expected)


def test_skipped_shards_are_merged_and_failed_ones_are_not(tmp_path):
    content = ContentStore(tmp_path / "store")
    shards = [shard(content, tmp_path, 0, {"kept": b"1"}, "skipped"),
              shard(content, tmp_path, 1, {"lost": b"2"}, "failed")]
    assert [p for p, _, _ in content.iter_files(merge_outputs(content, shards, "error"))] == ["kept"]


def test_no_outputs_merge_into_the_empty_folder(tmp_path):
    content = ContentStore(tmp_path / "store")
    shards = [shard(content, tmp_path, i, {}) for i in range(2)]
    (tmp_path / "none").mkdir()
    assert merge_outputs(content, shards, "error") == tree_cid(tmp_path / "none")
    assert merge_outputs(content, [], "concat") == tree_cid(tmp_path / "none")


@pytest.mark.parametrize("conflict", ["error", "concat"])
def test_a_file_in_one_shard_and_a_folder_in_another_is_a_conflict(tmp_path, conflict):
    content = ContentStore(tmp_path / "store")
    shards = [shard(content, tmp_path, 0, {"x": b"file"}), shard(content, tmp_path, 1, {"x/inner": b"in a folder"})]
    with pytest.raises(OutputConflict, match=r"shards 0, 1 wrote /outputs/x both as a file and as a folder"):
        merge_outputs(content, shards, conflict)


def test_clash_under_error_names_the_path_and_how_many_more(tmp_path):
    content = ContentStore(tmp_path / "store")
    shards = [shard(content, tmp_path, i, {"a": b"1", "b": b"2"}) for i in range(2)]
    with pytest.raises(OutputConflict, match=r"shards 0, 1 all wrote /outputs/a \(and 1 more paths\)"):
        merge_outputs(content, shards, "error")


def _blocks(content):
    for folder in os.listdir(content.blocks):
        for name in os.listdir(content.blocks / folder):
            if not name.startswith("."):
                yield name
