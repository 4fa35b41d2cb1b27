"""Publishing a job's merged outputs tree to `output.publish` through fsspec, and recording where."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import fsspec
import pytest

from bacalhau_flow.errors import PublishError, SpecError
from bacalhau_flow.jobs.publish import check_publish_url, publish_outputs, publish_url
from bacalhau_flow.jobs.store import JobStore
from bacalhau_flow.spec import load_spec
from bacalhau_flow.storage import ContentStore

TREE = {"counts.txt": b"3\n", "by-shard/0": b"zero\n", "by-shard/1": b"one\n" * 100_000}


@pytest.fixture
def outputs(tmp_path) -> tuple[ContentStore, str]:
    tree = tmp_path / "tree"
    for rel, data in TREE.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    content = ContentStore(tmp_path / "store")
    return content, content.put_tree(tree)


def pipeline(tmp_path: Path, publish: str):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"pipeline: pub\ninput: {{url: data}}\ntransform: {{cmd: ['true']}}\n"
                    f"output: {{publish: '{publish}'}}\n")
    return load_spec(spec)[0]


def test_placeholders_are_filled_and_a_local_path_is_relative_to_the_spec(tmp_path):
    assert publish_url(pipeline(tmp_path, "s3://b/{pipeline}/{job_id}"), "j-1") == "s3://b/pub/j-1"
    assert publish_url(pipeline(tmp_path, "out/{job_id}"), "j-1") == str(tmp_path / "out" / "j-1")
    assert publish_url(pipeline(tmp_path, "s3://b/{{literal}}/{job_id}"), "j-1") == "s3://b/{literal}/j-1"


@pytest.mark.parametrize("publish, message", [
    ("s3://b/{job}", "unknown placeholder {job}"),
    ("s3://b/{}", "unknown placeholder {}"),
    ("s3://b/{job_id:>9}", "unknown placeholder {job_id:>9}"),
    ("s3://b/{job_id", "unbalanced brace"),
    ("nosuchproto://b/x", "unknown protocol 'nosuchproto'"),
])
def test_bad_publish_urls_are_located_spec_errors(tmp_path, publish, message):
    with pytest.raises(SpecError, match="pub.output.publish: ") as info:
        pipeline(tmp_path, publish)
    assert message in str(info.value) and ":4:" in str(info.value)


def test_the_tree_is_written_file_by_file_under_a_local_url(tmp_path, outputs):
    content, cid = outputs
    assert publish_outputs(content, cid, str(tmp_path / "pub" / "j-1")) == 3
    written = {str(p.relative_to(tmp_path / "pub" / "j-1")): p.read_bytes()
               for p in (tmp_path / "pub" / "j-1").rglob("*") if p.is_file()}
    assert written == TREE


def test_an_empty_tree_publishes_nothing_but_the_folder(tmp_path):
    content = ContentStore(tmp_path / "store")
    (tmp_path / "empty").mkdir()
    assert publish_outputs(content, content.put_tree(tmp_path / "empty"), str(tmp_path / "pub")) == 0
    assert (tmp_path / "pub").is_dir() and not any((tmp_path / "pub").iterdir())


def test_memory_url(outputs):
    content, cid = outputs
    base = f"memory://pub-{uuid.uuid4().hex[:8]}/job"
    publish_outputs(content, cid, base)
    assert fsspec.filesystem("memory").cat(base.removeprefix("memory://") + "/by-shard/0") == b"zero\n"


def test_a_local_target_that_cannot_be_written_is_a_publish_error_naming_the_url(tmp_path, outputs):
    content, cid = outputs
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(PublishError, match=f"cannot publish the outputs to {tmp_path}/file/x") as info:
        publish_outputs(content, cid, str(tmp_path / "file" / "x"))
    assert "bflow get" in info.value.hint


def test_publish_to_s3_writes_every_file_with_its_bytes(s3_server, outputs):
    content, cid = outputs
    bucket = s3_server.bucket()
    publish_outputs(content, cid, f"s3://{bucket}/results/j-1")
    assert s3_server.read(bucket, "results/j-1") == TREE


def test_publish_to_a_missing_bucket_names_the_url(s3_server, outputs):
    content, cid = outputs
    with pytest.raises(PublishError, match="cannot publish the outputs to s3://bflow-no-bucket-x/j .*bucket does not exist"):
        publish_outputs(content, cid, "s3://bflow-no-bucket-x/j")


def test_a_protocol_that_is_not_installed_fails_before_the_job(tmp_path, monkeypatch):
    p = pipeline(tmp_path, "s3://b/{job_id}")
    import fsspec.core

    def not_installed(url, **kwargs):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", not_installed)
    with pytest.raises(PublishError, match="needs a package that is not installed") as info:
        check_publish_url(p)
    assert "s3fs" in info.value.hint


def test_published_url_is_recorded_and_an_old_store_gains_the_column(tmp_path):
    db = tmp_path / "jobs.sqlite"
    old = sqlite3.connect(db)  # a job store from before output.publish
    old.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, spec_file TEXT, state TEXT NOT NULL,"
                " created REAL NOT NULL, ended REAL, cid TEXT, shard_count INTEGER NOT NULL, error TEXT, pid INTEGER,"
                " flow_run_id TEXT, conflict TEXT NOT NULL DEFAULT 'error')")
    old.execute("INSERT INTO jobs (id, pipeline, state, created, shard_count) VALUES ('j-old', 'p', 'completed', 1, 0)")
    old.commit()
    old.close()
    store = JobStore(db)
    assert store.get("j-old").published is None and store.get("j-old").to_json()["published"] is None
    job = store.create_job("p", [])
    store.set_job(job.id, state="completed", published="s3://b/x")
    assert store.get(job.id).to_json()["published"] == "s3://b/x"
