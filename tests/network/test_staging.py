"""A node stages a shard's inputs: every datum's files, fetched in parallel, retried on
transient errors, read-only, and a StagingError naming the input and path otherwise."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import fsspec
import pytest
from http_helpers import FileServer

from bacalhau_flow.errors import StagingError
from bacalhau_flow.network.messages import InputRef, ShardRequest, TransformRef
from bacalhau_flow.network.staging import make_writable, stage_inputs
from bacalhau_flow.plan import retries

FILES = {"a.txt": "aa", "b.csv": "bbb", "sub/c.txt": "c", "sub/deep/d.txt": "dddd", "sp ace/e f.txt": "e"}


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(retries, "BACKOFF_S", (0.01, 0.01))


def make_tree(root: Path, files: dict[str, str] = FILES) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def request(url: str, *datums: list[str], name: str = "in") -> ShardRequest:
    return ShardRequest(job_id="j-test", pipeline="p", shard_index=0, shard_id="s", shard_count=1,
                        transform=TransformRef(cmd=["true"]), inputs=[InputRef(name=name, url=url)],
                        datums=[{name: paths} for paths in datums])


def staged(inputs: Path) -> dict[str, str]:
    return {str(p.relative_to(inputs)): p.read_text() for p in sorted(inputs.rglob("*")) if p.is_file()}


@pytest.fixture
def inputs_dir(tmp_path):
    path = tmp_path / "work" / "inputs"
    yield path
    make_writable(path)


def test_local_datums_are_copied_under_the_input_name_read_only(tmp_path, inputs_dir):
    src = make_tree(tmp_path / "src")
    (src / "sub" / "empty").mkdir()
    size = stage_inputs(request(str(src), ["/a.txt"], ["/sub"]), inputs_dir)
    assert staged(inputs_dir) == {"in/a.txt": "aa", "in/sub/c.txt": "c", "in/sub/deep/d.txt": "dddd"}
    assert size == 2 + 1 + 4
    assert (inputs_dir / "in" / "sub" / "empty").is_dir()  # a directory datum keeps its empty folders
    assert not os.access(inputs_dir / "in" / "a.txt", os.W_OK) or os.geteuid() == 0
    assert (inputs_dir / "in" / "a.txt").stat().st_mode & 0o222 == 0
    assert (inputs_dir / "in" / "sub").stat().st_mode & 0o222 == 0


def test_every_folder_made_for_a_deep_file_datum_is_read_only(tmp_path, inputs_dir):
    src = make_tree(tmp_path / "src")
    stage_inputs(request(str(src), ["/sub/deep/d.txt"], ["/a.txt"]), inputs_dir)
    assert staged(inputs_dir) == {"in/a.txt": "aa", "in/sub/deep/d.txt": "dddd"}
    for folder in (inputs_dir, inputs_dir / "in", inputs_dir / "in" / "sub", inputs_dir / "in" / "sub" / "deep"):
        assert folder.stat().st_mode & 0o222 == 0, f"{folder} is writable"


def test_root_datum_stages_the_whole_input(tmp_path, inputs_dir):
    src = make_tree(tmp_path / "src")
    stage_inputs(request(str(src), ["/"]), inputs_dir)
    assert staged(inputs_dir) == {f"in/{k}": v for k, v in FILES.items()}


def test_single_file_input_is_staged_under_its_basename(tmp_path, inputs_dir):
    (tmp_path / "one.csv").write_text("x,y\n")
    assert stage_inputs(request(str(tmp_path / "one.csv"), ["/"]), inputs_dir) == 4
    assert staged(inputs_dir) == {"in/one.csv": "x,y\n"}


def test_local_file_gone_since_planning_names_the_input_and_path(tmp_path, inputs_dir):
    src = make_tree(tmp_path / "src")
    with pytest.raises(StagingError, match=r"cannot stage input 'in' path /gone.txt: .*gone.txt") as info:
        stage_inputs(request(str(src), ["/a.txt"], ["/gone.txt"]), inputs_dir)
    assert not info.value.retryable  # another node would not find it either


def test_memory_filesystem_datums(inputs_dir):
    base = f"/stage-{uuid.uuid4().hex[:8]}"
    fsspec.filesystem("memory").pipe({f"{base}/x/1.txt": b"one", f"{base}/x/y/2.txt": b"two", f"{base}/z.txt": b"z"})
    stage_inputs(request(f"memory://{base}", ["/x"], ["/z.txt"]), inputs_dir)
    assert staged(inputs_dir) == {"in/x/1.txt": "one", "in/x/y/2.txt": "two", "in/z.txt": "z"}


def test_http_files_are_fetched_in_parallel(tmp_path, inputs_dir):
    names = {f"f{i:02}.txt": f"file {i}\n" for i in range(12)}
    with FileServer(make_tree(tmp_path / "www", names), delay=0.2) as server:
        size = stage_inputs(request(server.url + "/", *[[f"/{n}"] for n in names]), inputs_dir)
    assert staged(inputs_dir) == {f"in/{k}": v for k, v in names.items()}
    assert size == sum(len(v) for v in names.values())
    assert server.max_in_flight > 1


def test_http_root_datum_stages_the_whole_listing_with_encoded_names(tmp_path, inputs_dir):
    with FileServer(make_tree(tmp_path / "www")) as server:
        stage_inputs(request(server.url + "/", ["/"]), inputs_dir)
        assert server.gets("/sp%20ace/e%20f.txt") == 1
    assert staged(inputs_dir) == {f"in/{k}": v for k, v in FILES.items()}


def test_http_transient_errors_are_retried_for_every_file(tmp_path, inputs_dir):
    with FileServer(make_tree(tmp_path / "www"), failures=2, status=503) as server:
        stage_inputs(request(server.url + "/", ["/a.txt"], ["/sub"]), inputs_dir)
        assert server.gets("/a.txt") == 3 and server.gets("/sub/deep/d.txt") == 3
    assert staged(inputs_dir) == {"in/a.txt": "aa", "in/sub/c.txt": "c", "in/sub/deep/d.txt": "dddd"}


def test_http_server_error_that_lasts_fails_after_the_retries(tmp_path, inputs_dir):
    with FileServer(make_tree(tmp_path / "www"), failures=99, status=503) as server:
        with pytest.raises(StagingError, match=r"input 'in' path /: .*HTTP 503") as info:
            stage_inputs(request(server.url + "/", ["/a.txt"]), inputs_dir)
        assert server.requests[("HEAD", "/")] == retries.ATTEMPTS
    assert info.value.retryable


def test_http_file_missing_when_fetched_names_the_input_and_path(tmp_path, inputs_dir):
    with FileServer(make_tree(tmp_path / "www"), missing=("/sub/c.txt",)) as server:
        with pytest.raises(StagingError, match=r"cannot stage input 'in' path /sub/c.txt: .*not found") as info:
            stage_inputs(request(server.url + "/", ["/a.txt"], ["/sub"]), inputs_dir)
    assert not info.value.retryable


@pytest.mark.parametrize("bad", ["/../outside", "relative", "/a/./b", "/a//b"])
def test_a_datum_path_reaching_out_of_its_input_is_refused(tmp_path, inputs_dir, bad):
    src = make_tree(tmp_path / "src")
    with pytest.raises(StagingError, match="not a path under the input"):
        stage_inputs(request(str(src), [bad]), inputs_dir)


def test_s3_datums_are_staged_through_s3fs(s3_server, inputs_dir):
    bucket = s3_server.bucket({"data/a.txt": b"aa", "data/sub/c.txt": b"c", "data/sub/deep/d.txt": b"dddd"})
    assert stage_inputs(request(f"s3://{bucket}/data", ["/a.txt"], ["/sub"]), inputs_dir) == 7
    assert staged(inputs_dir) == {"in/a.txt": "aa", "in/sub/c.txt": "c", "in/sub/deep/d.txt": "dddd"}


def test_s3_prefix_without_keys_stages_an_empty_root_datum(s3_server, inputs_dir):
    bucket = s3_server.bucket({"elsewhere/x": b"x"})
    assert stage_inputs(request(f"s3://{bucket}/empty", ["/"]), inputs_dir) == 0
    assert (inputs_dir / "in").is_dir() and staged(inputs_dir) == {}


def test_s3_key_gone_since_planning_names_the_input_and_path(s3_server, inputs_dir):
    bucket = s3_server.bucket({"data/a.txt": b"aa"})
    with pytest.raises(StagingError, match=rf"cannot stage input 'in' path /b.txt: s3://{bucket}/data/b.txt: not found"):
        stage_inputs(request(f"s3://{bucket}/data", ["/a.txt"], ["/b.txt"]), inputs_dir)
