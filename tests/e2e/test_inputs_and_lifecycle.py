"""Inputs over HTTP and memory://, detached jobs, cancel, and where state lives."""

import http.server
import threading
import time
from functools import partial

import fsspec
import pytest
from cli_helpers import bflow, write_spec
from http_helpers import FileServer

from bacalhau_flow.home import bflow_home, jobs_db
from bacalhau_flow.jobs.store import JobStore


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "served"
    (root / "logs").mkdir(parents=True)
    for i in range(3):
        (root / "logs" / f"day{i}.log").write_text(f"GET /a\nGET /b\nPOST /c{i}\n" * (i + 1))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_directory_listing_is_globbed_and_staged(tmp_path, http_root):
    spec = write_spec(tmp_path, f"""
pipeline: http-grep
input: {{name: logs, url: '{http_root}/logs/', glob: '/day*.log'}}
transform: {{cmd: [sh, -c, 'grep -c GET $BFLOW_INPUTS/logs/*.log']}}
""")
    r = bflow("run", spec, "--json")
    assert r.code == 0, r.stderr
    out = tmp_path / "out"
    bflow("get", r.json()["id"], "-o", out)
    assert (out / "stdout").read_text().split() == ["2", "4", "6"]


def test_a_flaky_server_still_gives_a_succeeding_job(tmp_path):
    """Every (method, path) fails twice with 503 before it is served: planning's listing and
    every node's listing and fetch retry, and the job succeeds without a shard retry."""
    www = tmp_path / "www"
    (www / "logs" / "old").mkdir(parents=True)
    for i in range(3):
        (www / "logs" / f"day{i}.log").write_text(f"day {i}\n")
    (www / "logs" / "old" / "archive.log").write_text("old\n")
    with FileServer(www, failures=2, status=503) as server:
        spec = write_spec(tmp_path, f"""
pipeline: flaky-http
input: {{name: logs, url: '{server.url}/logs/', glob: '/*'}}
transform: {{cmd: [sh, -c, 'cd $BFLOW_INPUTS/logs && find . -type f | sort | xargs cat']}}
""")
        r = bflow("run", spec, "--json")
        assert r.code == 0, r.stderr
        assert [s["attempts"] for s in r.json()["shards"]] == [1, 1, 1, 1]
        assert server.gets("/logs/") == 3  # the listing, at planning
        assert server.gets("/logs/day1.log") == 3 and server.gets("/logs/old/archive.log") == 3  # staging
    out = tmp_path / "out"
    bflow("get", r.json()["id"], "-o", out)
    assert (out / "stdout").read_text().split("\n") == ["day 0", "day 1", "day 2", "old", ""]


def test_a_single_file_url_is_one_datum(tmp_path, http_root):
    spec = write_spec(tmp_path, f"""
pipeline: one-file
input: {{name: log, url: '{http_root}/logs/day1.log'}}
transform: {{cmd: [sh, -c, 'wc -l < $BFLOW_INPUTS/log/day1.log']}}
""")
    r = bflow("run", spec)
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == "6"


def test_memory_filesystem_input(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe({"/mem-input/x/1.txt": b"one", "/mem-input/x/2.txt": b"two", "/mem-input/y/3.txt": b"three"})
    spec = write_spec(tmp_path, """
pipeline: mem
input: {name: m, url: 'memory://mem-input', glob: '/*'}
transform: {cmd: [sh, -c, 'cd $BFLOW_INPUTS/m && find . -type f | sort | xargs cat; echo']}
""")
    r = bflow("run", spec)
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["onetwo", "three"]  # /x is one datum of its subtree, /y another


def test_prefect_state_lives_under_bflow_home(tmp_path):
    spec = write_spec(tmp_path, "pipeline: home\ninput: {name: here, url: .}\ntransform: {cmd: ['true']}\n")
    assert bflow("run", spec).code == 0
    assert (bflow_home() / "prefect-server" / "prefect.db").exists()  # the managed server's database
    assert (bflow_home() / "jobs.sqlite").exists()


def _wait_state(store: JobStore, job_id: str, states: set[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = store.get(job_id, with_shards=False).state
        except Exception:
            state = None
        if state in states:
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {states}")


def test_detach_returns_at_once_and_cancel_stops_the_job(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("a")
    spec = write_spec(tmp_path, "pipeline: detached\ninput: {url: d, glob: '/*'}\n"
                                "transform: {cmd: [sh, -c, 'sleep 120']}\n")
    started = time.monotonic()
    r = bflow("run", spec, "--detach")
    assert r.code == 0 and time.monotonic() - started < 10
    job_id = r.stdout.strip()
    assert job_id.startswith("j-")
    store = JobStore(jobs_db())
    _wait_state(store, job_id, {"running"})
    deadline = time.monotonic() + 60
    while store.get(job_id).shards[0].state != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    c = bflow("cancel", job_id[:12], "--json")
    assert c.code == 0, c.stderr
    assert c.json() == {"id": job_id, "state": "cancelled", "cancelled": True}
    assert _wait_state(store, job_id, {"cancelled"}, timeout=30) == "cancelled"
    assert store.get(job_id).shards[0].state == "cancelled"
    again = bflow("cancel", job_id, "--json")  # already ended: nothing to do, said so
    assert again.code == 0 and again.json() == {"id": job_id, "state": "cancelled", "cancelled": False}


def test_detached_job_completes_and_its_results_can_be_fetched(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("hello")
    spec = write_spec(tmp_path, "pipeline: bg\ninput: {url: d, glob: '/*'}\n"
                                "transform: {cmd: [sh, -c, 'cat $BFLOW_INPUTS/d/a > $BFLOW_OUTPUTS/copy']}\n")
    job_id = bflow("run", spec, "--detach").stdout.strip()
    assert _wait_state(JobStore(jobs_db()), job_id, {"completed", "failed"}) == "completed"
    out = tmp_path / "out"
    got = bflow("get", job_id, "-o", out, "--json")
    assert got.code == 0, got.stderr
    cid = bflow("describe", job_id, "--json").json()["cid"]
    assert got.json() == {"id": job_id, "state": "completed", "cid": cid, "output": str(out)} and cid
    assert (out / "outputs" / "copy").read_text() == "hello"


def test_unknown_job_prefix_is_a_clear_error():
    r = bflow("describe", "j-doesnotexist")
    assert r.code == 1 and "no job matches" in r.stderr


def test_network_picture_places_the_newest_jobs_shards_on_their_nodes(tmp_path):
    spec = write_spec(tmp_path, "pipeline: picture\ninput: {url: d, glob: '/*'}\n"
                                "transform: {cmd: [sh, -c, 'test $BFLOW_SHARD_INDEX != 1']}\n")
    (tmp_path / "d").mkdir()
    for name in "abc":
        (tmp_path / "d" / name).write_text(name)
    job = bflow("run", spec, "--json").json()
    r = bflow("network")
    assert r.code == 0, r.stderr
    assert "embedded network" in r.stdout and "(not on this network now)" in r.stdout
    for node in {s["node"] for s in job["shards"]}:
        assert node in r.stdout
    assert f"job {job['id']} (picture): shards" in r.stdout and "shard colours" in r.stdout
