"""open_input / InputRoot.walk over local paths, file://, memory:// and a real local HTTP server."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import threading
import uuid
from pathlib import Path

import fsspec
import pytest

from bacalhau_flow.errors import BflowError, InputNotFound, InputUnreachable, PlanError
from bacalhau_flow.plan import inputs, retries
from bacalhau_flow.plan.datums import plan_datums
from bacalhau_flow.plan.inputs import Entry, open_input

FILES = {"a.txt": "aa", "b.csv": "bbb", "sub/c.txt": "c", "sub/deep/d.txt": "dddd", "sp ace/e f.txt": "e"}


def make_tree(root: Path, files: dict[str, str] = FILES) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def listing(root) -> list[tuple[str, bool]]:
    return sorted((e.path, e.is_dir) for e in root.walk())


EXPECTED = [("/a.txt", False), ("/b.csv", False), ("/sp ace", True), ("/sp ace/e f.txt", False),
            ("/sub", True), ("/sub/c.txt", False), ("/sub/deep", True), ("/sub/deep/d.txt", False)]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(retries, "BACKOFF_S", (0.0, 0.0))


# --- local ----------------------------------------------------------------------------------

def test_local_path_lists_every_file_and_directory_relative_to_the_root(tmp_path):
    root = open_input(str(make_tree(tmp_path / "in")))
    assert not root.is_file and root.is_local
    assert listing(root) == EXPECTED


def test_local_walk_reports_file_sizes_and_no_directory_sizes(tmp_path):
    root = open_input(str(make_tree(tmp_path / "in")))
    sizes = {e.path: e.size for e in root.walk()}
    assert sizes["/sub/deep/d.txt"] == 4 and sizes["/a.txt"] == 2
    assert sizes["/sub"] is None


def test_list_paths_gives_the_same_paths_as_walk(tmp_path):
    root = open_input(str(make_tree(tmp_path / "in")))
    dirs, files = root.list_paths()
    assert sorted(dirs) == [p for p, d in EXPECTED if d]
    assert sorted(files) == [p for p, d in EXPECTED if not d]


def test_file_url_lists_the_same_as_the_plain_path(tmp_path):
    make_tree(tmp_path / "in")
    assert listing(open_input(f"file://{tmp_path}/in")) == EXPECTED


def test_trailing_slash_on_a_local_directory_changes_nothing(tmp_path):
    make_tree(tmp_path / "in")
    assert listing(open_input(f"{tmp_path}/in/")) == EXPECTED


def test_local_walk_does_not_follow_directory_symlinks(tmp_path):
    root_dir = make_tree(tmp_path / "in")
    os.symlink(root_dir, root_dir / "sub" / "loop")  # a cycle
    os.symlink(tmp_path, root_dir / "outside")
    assert listing(open_input(str(root_dir))) == EXPECTED


def test_local_walk_lists_file_symlinks_as_files_and_skips_broken_ones(tmp_path):
    root_dir = make_tree(tmp_path / "in")
    os.symlink(root_dir / "a.txt", root_dir / "link.txt")
    os.symlink(root_dir / "nothing", root_dir / "broken")
    got = {e.path: e for e in open_input(str(root_dir)).walk()}
    assert got["/link.txt"] == Entry("/link.txt", False, 2)
    assert "/broken" not in got


def test_missing_local_path_raises_input_not_found_naming_the_url(tmp_path):
    with pytest.raises(InputNotFound, match="nope") as info:
        open_input(str(tmp_path / "nope"))
    assert info.value.hint


def test_unreadable_subdirectory_is_an_error_not_silently_skipped(tmp_path, monkeypatch):
    root_dir = make_tree(tmp_path / "in")
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(inputs.os, "scandir", scandir)
    with pytest.raises(InputUnreachable, match="cannot list /sub") as info:
        open_input(str(root_dir)).walk()
    assert not info.value.retryable


def test_single_local_file_acts_as_a_directory_holding_just_that_file(tmp_path):
    (tmp_path / "one.csv").write_text("12345")
    root = open_input(str(tmp_path / "one.csv"))
    assert root.is_file
    assert root.walk() == [Entry("/one.csv", False, 5)]
    assert root.fs_path("/one.csv") == root.fs_path("/") == str(tmp_path / "one.csv")


def test_fs_path_maps_relative_paths_back_onto_the_filesystem(tmp_path):
    root = open_input(str(make_tree(tmp_path / "in")))
    assert root.fs_path("/sub/c.txt") == str(tmp_path / "in" / "sub" / "c.txt")
    assert root.fs_path("/") == str(tmp_path / "in")


# --- memory:// and other protocols ----------------------------------------------------------

@pytest.fixture
def memory_tree():
    fs = fsspec.filesystem("memory")
    base = f"/inputs-{uuid.uuid4().hex}"
    for rel, text in FILES.items():
        fs.pipe(f"{base}/in/{rel}", text.encode())
    yield f"memory://{base}/in"
    fs.rm(base, recursive=True)


def test_memory_filesystem_lists_like_a_local_tree(memory_tree):
    root = open_input(memory_tree)
    assert not root.is_file and not root.is_local
    assert listing(root) == EXPECTED
    assert {e.path: e.size for e in root.walk()}["/b.csv"] == 3


def test_memory_single_file_acts_as_a_directory_holding_it(memory_tree):
    root = open_input(memory_tree + "/sub/c.txt")
    assert root.is_file
    assert root.walk() == [Entry("/c.txt", False, 1)]
    assert [d.to_json() for d in plan_datums("m", root, "/*", [])] == [{"m": ["/c.txt"]}]


def test_memory_missing_path_raises_input_not_found(memory_tree):
    with pytest.raises(InputNotFound):
        open_input(memory_tree + "/nope")


def test_unknown_protocol_raises_plan_error_with_a_hint():
    with pytest.raises(PlanError, match="unknown protocol 'nosuchproto'") as info:
        open_input("nosuchproto://bucket/x")
    assert "fsspec" in info.value.hint


def test_known_protocol_without_its_package_names_the_package_to_install():
    pytest.importorskip("fsspec")
    try:
        import s3fs  # noqa: F401
        pytest.skip("s3fs is installed")
    except ImportError:
        pass
    with pytest.raises(PlanError, match="s3://") as info:
        open_input("s3://bucket/prefix")
    assert "s3fs" in info.value.hint


# --- http -----------------------------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(handler, directory: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def http_tree(tmp_path):
    server, base = serve(QuietHandler, make_tree(tmp_path / "www"))
    yield base
    server.shutdown()
    server.server_close()


def test_http_directory_listing_is_walked_from_the_html_links(http_tree):
    root = open_input(http_tree + "/")
    assert not root.is_file
    assert listing(root) == EXPECTED


def test_http_glob_plans_the_same_datums_as_the_local_tree(http_tree, tmp_path):
    local = open_input(str(tmp_path / "www"))
    remote = open_input(http_tree + "/")
    for glob in ["/", "/*", "/**", "/*.txt", "/sub/*", "/*/*"]:
        assert plan_datums("w", remote, glob, []) == plan_datums("w", local, glob, []), glob


def test_http_directory_url_without_trailing_slash_is_a_directory(http_tree):
    root = open_input(http_tree + "/sub")
    assert not root.is_file
    assert listing(root) == [("/c.txt", False), ("/deep", True), ("/deep/d.txt", False)]


def test_http_bare_server_url_is_its_root_directory(http_tree):
    assert listing(open_input(http_tree)) == EXPECTED


def test_http_single_file_url_is_one_datum(http_tree):
    root = open_input(http_tree + "/sub/c.txt")
    assert root.is_file
    assert root.walk() == [Entry("/c.txt", False, 1)]
    assert [d.to_json() for d in plan_datums("w", root, "/", [])] == [{"w": ["/"]}]
    assert [d.to_json() for d in plan_datums("w", root, "/*", [])] == [{"w": ["/c.txt"]}]


def test_http_url_encoded_names_are_decoded_and_mapped_back(http_tree):
    root = open_input(http_tree + "/")
    assert ("/sp ace/e f.txt", False) in listing(root)
    assert root.fs_path("/sp ace/e f.txt") == http_tree + "/sp%20ace/e%20f.txt"
    assert root.fs.cat(root.fs_path("/sp ace/e f.txt")) == b"e"


def test_http_404_url_raises_input_not_found(http_tree):
    with pytest.raises(InputNotFound, match="404"):
        open_input(http_tree + "/nope.txt")
    with pytest.raises(InputNotFound):
        open_input(http_tree + "/nope/")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_http_url_raises_input_unreachable_with_the_reason():
    url = f"http://127.0.0.1:{closed_port()}/data/"
    with pytest.raises(InputUnreachable, match="unreachable") as info:
        open_input(url)
    assert url in str(info.value)
    assert info.value.retryable
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no raw aiohttp chain shown


def failing_handler(failures: int, status: int, counter: list[int]):
    """A handler that answers `status` to the first `failures` requests, then serves files."""

    class Handler(QuietHandler):
        def _maybe_fail(self) -> bool:
            counter.append(1)
            if len(counter) <= failures:
                self.send_error(status)
                return True
            return False

        def do_GET(self):
            if not self._maybe_fail():
                super().do_GET()

        def do_HEAD(self):
            if not self._maybe_fail():
                super().do_HEAD()

    return Handler


def test_server_error_is_retried_then_raises_input_unreachable(tmp_path):
    counter: list[int] = []
    server, base = serve(failing_handler(99, 500, counter), make_tree(tmp_path / "www"))
    try:
        with pytest.raises(InputUnreachable, match="HTTP 500"):
            open_input(base + "/")
        assert len(counter) == retries.ATTEMPTS
    finally:
        server.shutdown()
        server.server_close()


def test_transient_server_error_is_retried_and_then_succeeds(tmp_path):
    counter: list[int] = []
    server, base = serve(failing_handler(1, 503, counter), make_tree(tmp_path / "www"))
    try:
        assert listing(open_input(base + "/")) == EXPECTED
    finally:
        server.shutdown()
        server.server_close()


def test_forbidden_http_url_is_unreachable_and_not_retried(tmp_path):
    counter: list[int] = []
    server, base = serve(failing_handler(99, 403, counter), make_tree(tmp_path / "www"))
    try:
        with pytest.raises(InputUnreachable, match="403") as info:
            open_input(base + "/")
        assert not info.value.retryable
        assert len(counter) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_every_input_error_is_a_bflow_error(tmp_path):
    for url in [str(tmp_path / "nope"), "nosuchproto://x", f"http://127.0.0.1:{closed_port()}/"]:
        with pytest.raises(BflowError):
            open_input(url)
