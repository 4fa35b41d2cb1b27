"""s3:// inputs through s3fs, against a real moto S3 server: they list and glob like a local tree."""

from __future__ import annotations

import socket

import pytest

from bacalhau_flow.errors import InputNotFound, InputUnreachable
from bacalhau_flow.plan.datums import plan_datums
from bacalhau_flow.plan.inputs import Entry, open_input

FILES = {"a.txt": "aa", "b.csv": "bbb", "sub/c.txt": "c", "sub/deep/d.txt": "dddd", "sp ace/e f.txt": "e"}
EXPECTED = [("/a.txt", False), ("/b.csv", False), ("/sp ace", True), ("/sp ace/e f.txt", False),
            ("/sub", True), ("/sub/c.txt", False), ("/sub/deep", True), ("/sub/deep/d.txt", False)]


def listing(root) -> list[tuple[str, bool]]:
    return sorted((e.path, e.is_dir) for e in root.walk())


@pytest.fixture
def bucket(s3_server):
    return s3_server.bucket({f"data/{k}": v.encode() for k, v in FILES.items()} | {"other/x.txt": b"x"})


def test_s3_prefix_lists_every_key_and_inferred_directory(bucket):
    root = open_input(f"s3://{bucket}/data")
    assert not root.is_file
    assert listing(root) == EXPECTED
    assert {e.path: e.size for e in root.walk()}["/sub/deep/d.txt"] == 4


def test_s3_trailing_slash_and_whole_bucket(bucket):
    assert listing(open_input(f"s3://{bucket}/data/")) == EXPECTED
    assert ("/other/x.txt", False) in listing(open_input(f"s3://{bucket}"))


def test_s3_globs_plan_the_same_datums_as_a_local_tree(bucket, tmp_path):
    for rel, text in FILES.items():
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / rel).write_text(text)
    local, remote = open_input(str(tmp_path / "in")), open_input(f"s3://{bucket}/data")
    for glob in ["/", "/*", "/**", "/*.txt", "/sub/*", "/*/*", "/**/*.txt"]:
        assert plan_datums("w", remote, glob, []) == plan_datums("w", local, glob, []), glob


def test_s3_single_key_is_one_datum(bucket):
    root = open_input(f"s3://{bucket}/data/sub/c.txt")
    assert root.is_file
    assert root.walk() == [Entry("/c.txt", False, 1)]


def test_s3_prefix_without_keys_is_an_empty_input(bucket):
    root = open_input(f"s3://{bucket}/no-such-prefix")
    assert not root.is_file and root.walk() == []
    assert plan_datums("w", root, "/*", []) == []


def test_s3_missing_bucket_is_input_not_found_naming_the_bucket(s3_server):
    with pytest.raises(InputNotFound, match="bucket 'no-such-bucket-4711' does not exist") as info:
        open_input("s3://no-such-bucket-4711/data")
    assert "s3://no-such-bucket-4711/data" in str(info.value)


def test_s3_sees_keys_written_after_an_earlier_listing(s3_server, bucket):
    assert len(open_input(f"s3://{bucket}/data").walk()) == len(EXPECTED)
    s3_server.filesystem().pipe(f"{bucket}/data/new.txt", b"new")
    assert ("/new.txt", False) in listing(open_input(f"s3://{bucket}/data"))


def test_s3_unreachable_endpoint_is_input_unreachable(s3_server, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(InputUnreachable, match="unreachable") as info:
            open_input("s3://bucket/data")
        assert info.value.retryable
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
