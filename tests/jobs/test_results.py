"""Merging shard outputs under the conflict rule, and what `bflow get` writes."""

import json

import pytest

from bacalhau_flow.errors import OutputConflict
from bacalhau_flow.jobs.results import merge_outputs, write_results
from bacalhau_flow.jobs.store import JobRecord, ShardRecord
from bacalhau_flow.storage import ContentStore


def shard_with(content, tmp_path, index, files: dict[str, str], state="completed"):
    tree = tmp_path / f"tree{index}"
    for rel, text in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    tree.mkdir(exist_ok=True)
    return ShardRecord(index=index, id=f"sh-{index}", state=state, datums=[], cid=content.put_tree(tree),
                       exit_code=0, stdout_cid=content.put_bytes(f"out{index}\n".encode()),
                       stderr_cid=content.put_bytes(b""))


def test_disjoint_outputs_merge_into_one_tree(tmp_path):
    content = ContentStore(tmp_path / "store")
    shards = [shard_with(content, tmp_path, 0, {"a/x.txt": "x"}), shard_with(content, tmp_path, 1, {"a/y.txt": "y"})]
    merged = merge_outputs(content, shards, "error", tmp_path / "scratch")
    assert [(p, content.cat(c)) for p, c, _ in content.iter_files(merged)] == [("a/x.txt", b"x"), ("a/y.txt", b"y")]


def test_clash_with_conflict_error_names_path_and_shards(tmp_path):
    content = ContentStore(tmp_path / "store")
    shards = [shard_with(content, tmp_path, i, {"same.txt": str(i)}) for i in range(3)]
    with pytest.raises(OutputConflict, match=r"shards 0, 1, 2 all wrote /outputs/same.txt"):
        merge_outputs(content, shards, "error", tmp_path / "scratch")


def test_clash_with_conflict_concat_joins_in_shard_order(tmp_path):
    content = ContentStore(tmp_path / "store")
    shards = [shard_with(content, tmp_path, i, {"same.txt": f"{i}\n"}) for i in (0, 1, 2)]
    merged = merge_outputs(content, list(reversed(shards))[::-1], "concat", tmp_path / "scratch")
    (_, cid, _), = content.iter_files(merged)
    assert content.cat(cid) == b"0\n1\n2\n"


def test_failed_shards_outputs_are_not_merged(tmp_path):
    content = ContentStore(tmp_path / "store")
    shards = [shard_with(content, tmp_path, 0, {"ok": "1"}), shard_with(content, tmp_path, 1, {"bad": "2"}, "failed")]
    merged = merge_outputs(content, shards, "error", tmp_path / "scratch")
    assert [p for p, _, _ in content.iter_files(merged)] == ["ok"]


def test_write_results_lays_out_the_job_as_promised(tmp_path):
    content = ContentStore(tmp_path / "store")
    shards = [shard_with(content, tmp_path, 0, {"o0": "a"}), shard_with(content, tmp_path, 1, {"o1": "b"})]
    job = JobRecord(id="j-1", pipeline="p", state="completed", created=0.0, shard_count=2, shards=shards,
                    cid=merge_outputs(content, shards, "error", tmp_path / "scratch"))
    dest = tmp_path / "got"
    write_results(content, job, dest)
    assert (dest / "stdout").read_text() == "out0\nout1\n"
    assert sorted(p.name for p in (dest / "outputs").iterdir()) == ["o0", "o1"]
    assert (dest / "shards" / "1" / "outputs" / "o1").read_text() == "b"
    assert (dest / "shards" / "1" / "exit_code").read_text() == "0\n"
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["cid"] == job.cid and manifest["shards"][1]["cid"] == shards[1].cid
