"""`bflow logs -f` on a running job, `bflow list --pipeline/--state`, and `--json` on `add`."""

import json
import signal
import subprocess
import time
import uuid

from cli_helpers import bflow, bflow_process, write_spec

from bacalhau_flow.home import jobs_db
from bacalhau_flow.jobs.store import JobStore


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The next line of `proc`'s stdout, within `timeout` seconds (then AssertionError)."""
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line within {timeout:g}s"
    return proc.stdout.readline().decode()


def test_logs_follow_prints_each_shard_as_it_ends_and_ends_with_the_job(tmp_path):
    (tmp_path / "d").mkdir()
    for name in "ab":
        (tmp_path / "d" / name).write_text(name)
    go = tmp_path / "go"  # shard 1 waits for it
    spec = write_spec(tmp_path, f"""pipeline: follow-{uuid.uuid4().hex[:6]}
input: {{url: d, glob: '/*'}}
timeout: 2m
transform:
  cmd: [sh, -c, 'if [ $BFLOW_SHARD_INDEX = 1 ]; then while [ ! -e {go} ]; do sleep 0.1; done; fi;
                 echo "shard $BFLOW_SHARD_INDEX out"; echo "shard $BFLOW_SHARD_INDEX err" >&2']
""")
    job_id = bflow("run", spec, "--detach").stdout.strip()
    following = bflow_process("logs", "-f", job_id)  # before the job is even recorded
    interrupted = bflow_process("logs", "--follow", job_id)
    try:
        assert read_line(following, 90) == "shard 0 out\n"
        assert read_line(interrupted, 30) == "shard 0 out\n"
        time.sleep(1)
        assert following.poll() is None and interrupted.poll() is None  # shard 1 still runs

        interrupted.send_signal(signal.SIGINT)  # Ctrl-C: exits 130, quietly, the job goes on
        out, err = interrupted.communicate(timeout=10)
        assert interrupted.returncode == 130
        assert err.decode() == "shard 0 err\n" and out == b""

        go.touch()
        out, err = following.communicate(timeout=60)
        assert following.returncode == 0, err
        assert out.decode() == "shard 1 out\n" and err.decode() == "shard 0 err\nshard 1 err\n"
    finally:
        go.touch()
        for proc in (following, interrupted):
            if proc.poll() is None:
                proc.kill()
    store = JobStore(jobs_db())
    try:
        assert store.get(job_id, with_shards=False).state == "completed"
    finally:
        store.close()
    assert bflow("logs", "-f", job_id).stdout == "shard 0 out\nshard 1 out\n"  # an ended job: all at once


def test_list_filters_by_pipeline_and_state_and_shows_completed_out_of_all():
    name, other = f"listed-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    store = JobStore(jobs_db())
    try:
        done = store.create_job(name, [(0, "s0", []), (1, "s1", [])])
        attempt = store.start_attempt(done.id, 0)
        store.finish_attempt(done.id, 0, attempt, state="completed", node="n-x", exit_code=0, cid=None,
                             stdout_cid=None, stderr_cid=None, error=None, started=None, ended=None, final=True)
        store.set_job(done.id, state="failed", error="1 of 2 shards failed")
        queued = store.create_job(name, [(0, "s0", [])])
        store.create_job(other, [(0, "s0", [])])
    finally:
        store.close()
    mine = bflow("list", "--pipeline", name, "--json").json()
    assert [j["id"] for j in mine] == [queued.id, done.id]
    failed = bflow("list", "--pipeline", name, "--state", "failed", "--json").json()
    assert [(j["id"], j["completed"], j["shards"]) for j in failed] == [(done.id, 1, 2)]
    table = bflow("list", "-p", name, "-s", "failed").stdout
    assert "COMPLETED" in table and "1/2" in table and other not in table and queued.id[:14] not in table
    wrong = bflow("list", "--state", "finished")
    error, hint = wrong.stderr.splitlines()
    assert wrong.code == 2 and error == "error: --state finished: not a job state"
    assert hint.startswith("hint: one of queued, running, completed, failed, cancelled")


def test_add_speaks_json(tmp_path):
    (tmp_path / "f.txt").write_text("hello")
    added = bflow("add", tmp_path / "f.txt", "--json")
    assert added.code == 0 and added.json() == {"cid": bflow("add", tmp_path / "f.txt").stdout.strip(),
                                                "path": str(tmp_path / "f.txt")}
    assert json.dumps(added.json())
