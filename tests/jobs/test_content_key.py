"""Content keys (jobs/content_key.py): what changes a shard's key, what does not, and the
local CID cache that keeps unchanged files from being read again."""

from __future__ import annotations

import os
import time
from pathlib import Path

import fsspec
import pytest

from bacalhau_flow.jobs.content_key import ContentKeys, transform_key
from bacalhau_flow.jobs.store import JobStore
from bacalhau_flow.plan.pipeline import plan_pipeline
from bacalhau_flow.spec.loader import load_spec_text


def _pipeline(base: Path, *, url: str = "data", glob: str = "/*", extra: str = "", cmd: str = "cat"):
    text = f"pipeline: keys\ninput: {{url: '{url}', glob: '{glob}'}}\ntransform: {{cmd: [sh, -c, '{cmd}']}}\n{extra}"
    (pipeline,) = load_spec_text(text, source=str(base / "spec.yaml"), base_dir=base)
    return pipeline


def _keys(pipeline, store: JobStore) -> list:
    return ContentKeys(pipeline, store).keys(plan_pipeline(pipeline).shards)


def _tree(base: Path, files: dict[str, str], age_s: float = 0) -> Path:
    for rel, text in files.items():
        path = base / "data" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if age_s:
            then = time.time() - age_s
            os.utime(path, (then, then))
    return base


@pytest.fixture
def store(tmp_path):
    jobs = JobStore(tmp_path / "jobs.db")
    yield jobs
    jobs.close()


def test_same_content_in_another_folder_gives_the_same_keys(tmp_path, store):
    files = {"a.txt": "A", "b.txt": "B"}
    one = _keys(_pipeline(_tree(tmp_path / "one", files)), store)
    two = _keys(_pipeline(_tree(tmp_path / "two", files)), store)
    assert one == two and len(set(one)) == 2 and all(k.startswith("ck-") for k in one)


def test_changing_one_file_changes_only_its_shards_key(tmp_path, store):
    base = _tree(tmp_path, {"a.txt": "A", "b.txt": "B"})
    before = _keys(_pipeline(base), store)
    (base / "data" / "b.txt").write_text("b")  # same size
    after = _keys(_pipeline(base), store)
    assert before[0] == after[0] and before[1] != after[1]


def test_a_file_added_inside_a_directory_datum_changes_its_key(tmp_path, store):
    base = _tree(tmp_path, {"x/1.txt": "1", "y/1.txt": "1"})
    before = _keys(_pipeline(base), store)
    (base / "data" / "x" / "2.txt").write_text("2")
    after = _keys(_pipeline(base), store)
    assert before[1] == after[1] and before[0] != after[0]


def test_a_renamed_file_changes_the_key(tmp_path, store):
    base = _tree(tmp_path, {"d/a.txt": "A"})
    before = _keys(_pipeline(base), store)
    os.rename(base / "data" / "d" / "a.txt", base / "data" / "d" / "b.txt")
    assert _keys(_pipeline(base), store) != before


@pytest.mark.parametrize("extra, changes", [
    ("transform: {cmd: [sh, -c, 'cat -n']}", True),
    ("transform: {cmd: [sh, -c, cat], env: {A: b}}", True),
    ("transform: {cmd: [sh, -c, cat], stdin: hi}", True),
    ("network: full", True),
    ("resources: {gpu: 1}", True),
    ("resources: {cpu: 2, memory: 1Gi}", False),
    ("timeout: 5m", False),
    ("retries: 3", False),
])
def test_what_in_the_spec_changes_the_transform_key(tmp_path, extra, changes):
    plain = _pipeline(tmp_path)
    text = "pipeline: keys\ninput: {url: data, glob: '/*'}\n" + (
        extra + "\n" if extra.startswith("transform") else "transform: {cmd: [sh, -c, cat]}\n" + extra + "\n")
    (other,) = load_spec_text(text, source="spec.yaml", base_dir=tmp_path)
    assert (transform_key(plain) != transform_key(other)) is changes


def test_a_changed_wasm_module_changes_the_transform_key(tmp_path):
    module = tmp_path / "m.wasm"
    module.write_bytes(b"\0asm one")
    text = "pipeline: keys\ninput: {url: data}\ntransform: {executor: wasm, module: m.wasm}\n"
    (pipeline,) = load_spec_text(text, source="spec.yaml", base_dir=tmp_path)
    before = transform_key(pipeline)
    module.write_bytes(b"\0asm two")
    assert transform_key(pipeline) != before


def test_an_unchanged_old_file_is_not_hashed_again(tmp_path, store):
    base = _tree(tmp_path, {"a.txt": "A"}, age_s=60)
    first = _keys(_pipeline(base), store)
    checked = store.cached_file_cids(str(base / "data"))
    assert len(checked) == 1
    second = _keys(_pipeline(base), store)
    assert second == first and store.cached_file_cids(str(base / "data")) == checked  # same entry, not re-hashed


def test_a_young_file_is_hashed_again_until_it_is_old_enough(tmp_path, store):
    """An entry hashed within RACY_NS of the file's mtime is not trusted (git's racy-clean rule)."""
    base = _tree(tmp_path, {"a.txt": "A"})
    _keys(_pipeline(base), store)
    checked = store.cached_file_cids(str(base / "data"))
    time.sleep(0.01)
    _keys(_pipeline(base), store)
    assert store.cached_file_cids(str(base / "data")) != checked


def test_remote_files_are_keyed_by_their_listing_without_downloading(store, tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/keys-remote/a.txt", b"A")
    fs.pipe("/keys-remote/b.txt", b"B")
    pipeline = _pipeline(tmp_path, url="memory://keys-remote")
    before = _keys(pipeline, store)
    assert None not in before
    time.sleep(0.01)
    fs.pipe("/keys-remote/b.txt", b"b")  # same size, written again: a new `created`
    after = _keys(pipeline, store)
    assert before[0] == after[0] and before[1] != after[1]


def test_an_input_that_cannot_be_read_gives_no_key(tmp_path, store):
    base = _tree(tmp_path, {"a.txt": "A"})
    pipeline = _pipeline(base)
    shards = plan_pipeline(pipeline).shards
    (base / "data" / "a.txt").unlink()
    assert ContentKeys(pipeline, store).keys(shards) == [None]  # such a shard always runs
