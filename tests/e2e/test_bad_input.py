"""Bad input gets a clear, located error and an exit status, never a traceback."""

import os
import signal
import time

from cli_helpers import bflow, bflow_process, wait_for_running_shard, write_spec
from http_helpers import FileServer

from bacalhau_flow.home import jobs_db
from bacalhau_flow.jobs.store import JobStore


def spec_over(tmp_path, body: str, files: dict[str, str] | None = None):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for name, text in (files or {"a.txt": "alpha\n", "b.txt": "beta\n"}).items():
        (data / name).write_text(text)
    return write_spec(tmp_path, body)


def test_malformed_yaml_is_located_and_exits_2(tmp_path):
    spec = write_spec(tmp_path, "pipeline: x\ninput: {url: data\n")
    r = bflow("validate", spec)
    assert r.code == 2
    assert f"{spec}:3:" in r.stderr and "Traceback" not in r.stderr


def test_unknown_field_names_file_line_column_and_field(tmp_path):
    spec = write_spec(tmp_path, "pipeline: wc\ninput:\n  url: data\n  globb: '/*'\ntransform: {cmd: ['true']}\n")
    r = bflow("validate", spec)
    assert r.code == 2
    assert f"{spec}:4:3: wc.input.globb: unknown field 'globb'" in r.stderr.replace("\n", "")


def test_bad_glob_is_a_spec_error(tmp_path):
    spec = write_spec(tmp_path, "pipeline: wc\ninput: {url: data, glob: '/[a'}\ntransform: {cmd: ['true']}\n")
    r = bflow("run", spec)
    assert r.code == 2 and "wc.input.glob" in r.stderr


def test_missing_input_fails_before_anything_runs(tmp_path):
    spec = write_spec(tmp_path, "pipeline: wc\ninput: {url: nowhere}\ntransform: {cmd: ['true']}\n")
    r = bflow("run", spec)
    assert r.code == 2 and "nowhere" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_url_is_reported(tmp_path):
    spec = write_spec(tmp_path, "pipeline: wc\ninput: {url: 'http://127.0.0.1:9/data/'}\ntransform: {cmd: ['true']}\n")
    r = bflow("run", spec)
    assert r.code == 2 and "127.0.0.1:9" in r.stderr


def test_http_404_url_is_not_found_before_anything_runs(tmp_path):
    (tmp_path / "www").mkdir()
    with FileServer(tmp_path / "www") as server:
        spec = write_spec(tmp_path, f"pipeline: wc\ninput: {{url: '{server.url}/missing.txt'}}\n"
                                    "transform: {cmd: ['true']}\n")
        r = bflow("run", spec)
    assert r.code == 2
    assert f"{server.url}/missing.txt: not found (HTTP 404)" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_host_is_unreachable_and_named(tmp_path):
    spec = write_spec(tmp_path, "pipeline: wc\ninput: {url: 'http://bflow-no-such-host.invalid/data/'}\n"
                                "transform: {cmd: ['true']}\n")
    r = bflow("run", spec)
    assert r.code == 2
    assert "http://bflow-no-such-host.invalid/data/: unreachable" in r.stderr
    assert "Traceback" not in r.stderr


def test_listed_file_missing_when_staged_fails_the_shard_naming_input_and_path(tmp_path):
    (tmp_path / "www").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "www" / name).write_text(name)
    with FileServer(tmp_path / "www", missing=("/b.txt",)) as server:  # listed, but GET answers 404
        spec = write_spec(tmp_path, f"pipeline: gone\ninput: {{name: www, url: '{server.url}/', glob: '/*'}}\n"
                                    "transform: {cmd: [sh, -c, 'cat $BFLOW_INPUTS/www/*']}\n")
        r = bflow("run", spec, "--json")
    assert r.code == 1 and "Traceback" not in r.stderr
    a, b = r.json()["shards"]
    assert a["state"] == "completed"
    assert b["state"] == "failed" and b["exit_code"] is None
    assert f"cannot stage input 'www' path /b.txt: {server.url}/b.txt: not found" in b["error"]
    logs = bflow("logs", r.json()["id"], "--shard", "1")
    assert "cannot stage input 'www' path /b.txt" in logs.stderr


def test_glob_matching_nothing_is_an_empty_succeeding_job_with_a_warning(tmp_path):
    spec = spec_over(tmp_path, "pipeline: none\ninput: {url: data, glob: '/*.csv'}\ntransform: {cmd: [cat]}\n")
    r = bflow("run", spec, "--json")
    assert r.code == 0
    assert "matched nothing" in r.stderr
    job = r.json()
    assert job["state"] == "completed" and job["shards"] == [] and job["cid"]


def test_command_not_found_fails_the_job_with_the_reason_in_stderr(tmp_path):
    spec = spec_over(tmp_path, "pipeline: nocmd\ninput: {url: data, glob: '/a.txt'}\ntransform: {cmd: [no-such-tool-xyz]}\n")
    r = bflow("run", spec, "--json")
    assert r.code == 1
    job = r.json()
    assert job["shards"][0]["exit_code"] == 127
    logs = bflow("logs", job["id"], "--shard", "0")
    assert "command not found: no-such-tool-xyz" in logs.stderr


def test_timeout_fails_the_shard_and_says_so(tmp_path):
    spec = spec_over(tmp_path, "pipeline: slow\ninput: {url: data, glob: '/a.txt'}\n"
                               "transform: {cmd: [sleep, '30']}\ntimeout: 1s\n")
    started = time.monotonic()
    r = bflow("run", spec, "--json")
    assert r.code == 1 and time.monotonic() - started < 20
    shard = r.json()["shards"][0]
    assert shard["state"] == "failed" and "timed out" in shard["error"]


def test_output_path_clash_fails_the_job_and_names_the_path(tmp_path):
    spec = spec_over(tmp_path, "pipeline: clash\ninput: {url: data, glob: '/*'}\n"
                               "transform: {cmd: [sh, -c, 'echo $BFLOW_SHARD_INDEX > $BFLOW_OUTPUTS/same.txt']}\n")
    r = bflow("run", spec, "--json")
    assert r.code == 1
    job = r.json()
    assert job["state"] == "failed" and "/outputs/same.txt" in job["error"] and "shards 0, 1" in job["error"]
    # every shard itself completed; only the merge refused
    assert [s["state"] for s in job["shards"]] == ["completed", "completed"]


def test_retries_run_a_failed_shard_again_on_another_node(tmp_path):
    marker = tmp_path / "first-attempt-done"
    spec = spec_over(tmp_path, "pipeline: flaky\ninput: {url: data, glob: '/a.txt'}\nretries: 2\n"
                               f"transform: {{cmd: [sh, -c, 'test -e {marker} || {{ touch {marker}; exit 9; }}']}}\n")
    r = bflow("run", spec, "--json")
    assert r.code == 0, r.stderr
    shard = r.json()["shards"][0]
    assert shard["attempts"] == 2 and shard["state"] == "completed"
    attempts = JobStore(jobs_db()).attempts(r.json()["id"], 0)
    assert [a["exit_code"] for a in attempts] == [9, 0]
    assert attempts[0]["node"] != attempts[1]["node"]


def test_shard_larger_than_any_node_fails_fast(tmp_path):
    spec = spec_over(tmp_path, "pipeline: huge\ninput: {url: data, glob: '/a.txt'}\nretries: 3\n"
                               "transform: {cmd: ['true']}\nresources: {memory: 100Ti}\n")
    started = time.monotonic()
    r = bflow("run", spec, "--json")
    assert r.code == 1 and time.monotonic() - started < 30
    shard = r.json()["shards"][0]
    assert shard["attempts"] == 1 and "more than any node has" in shard["error"]


def test_ctrl_c_marks_the_job_cancelled_and_nothing_half_done_as_done(tmp_path):
    spec = spec_over(tmp_path, "pipeline: long\ninput: {url: data, glob: '/*'}\n"
                               "transform: {cmd: [sh, -c, 'sleep 60; echo done > $BFLOW_OUTPUTS/x']}\n")
    proc = bflow_process("run", spec, "--json", start_new_session=True)
    store = JobStore(jobs_db())
    job, _ = wait_for_running_shard("long")
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    record = store.get(job.id)
    assert record.state == "cancelled"
    assert all(s.state == "cancelled" for s in record.shards)
    assert b"Traceback" not in stderr


def test_a_damaged_job_store_is_one_error_naming_the_file_and_exits_2(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("BFLOW_HOME", str(home))
    store = JobStore(jobs_db())
    store.create_job("p", [(0, "a", [])])
    store.close()
    jobs_db().write_bytes(b"\x07" * jobs_db().stat().st_size)  # garbage where the history was
    r = bflow("list")
    assert r.code == 2, r.stdout + r.stderr
    assert "jobs.sqlite" in r.stderr and "damaged" in r.stderr and "Traceback" not in r.stderr
    assert "mv " in r.stderr  # the hint: how to start a new history
