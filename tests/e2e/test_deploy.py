"""`bflow deploy` and `bflow serve` against the managed Prefect server of a home of their own.

One scenario (a Prefect server takes ~10-20 s to start here): deploy (it starts the server and
leaves it up), serve (it uses that server; the deployments read Ready), see an interval
schedule's runs fire into the job store, reuse, a downstream started by new output, redeploy an
edited command, delete, Ctrl-C (serve stops, the server stays), `bflow server stop`.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC

from cli_helpers import bflow
from home_helpers import (
    Lines,
    api_get,
    bflow_in,
    bflow_started_in,
    pid_alive,
    server_record,
    stop_server_of,
    wait_until,
)

SPEC = """\
pipeline: tick
input: {{url: data, glob: "/*"}}
transform:
  cmd: "echo {word}; cp $BFLOW_INPUTS/data/* $BFLOW_OUTPUTS/"
schedule: {{interval: 3}}
---
pipeline: manual
input: {{url: data}}
transform:
  cmd: "echo manual"
---
pipeline: after
input: {{url: "pipeline://tick"}}
transform:
  cmd: "cat $BFLOW_INPUTS/tick/*"
"""


def _jobs(pipeline: str) -> list[dict]:
    """`bflow list --json` (in this process, with $BFLOW_HOME set by the test) for one pipeline."""
    result = bflow("list", "--json")
    assert result.code == 0, result.stderr
    return [j for j in result.json() if j["pipeline"] == pipeline]


def _wait_jobs(pipeline: str, count: int, timeout: float, after: str = "") -> list[dict]:
    """At least `count` completed jobs of `pipeline` created after `after` (ISO time), newest first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [j for j in _jobs(pipeline) if j["state"] == "completed" and j["created"] > after]
        if len(done) >= count:
            return done
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} completed {pipeline} jobs after {after!r} within {timeout:g}s: "
                         f"{_jobs(pipeline)}")


def _reused(job_id: str) -> int:
    """How many shards of the job reused an earlier result (state `skipped`)."""
    shards = bflow("describe", job_id, "--json").json()["shards"]
    return sum(s["state"] == "skipped" for s in shards)


def _now_iso() -> str:
    from datetime import datetime

    return datetime.now(UTC).isoformat()


def _deployment(api_url: str, name: str) -> dict:
    return api_get(f"{api_url}/deployments/name/{name}")


def test_deploy_serve_redeploy_delete_and_stop(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("BFLOW_HOME", str(home))  # for `bflow list/logs` in this process
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a\n")
    (tmp_path / "data" / "b.txt").write_text("b\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(word="first"))
    serve, out = None, None
    try:
        # Given no server runs, deploy starts the managed one and leaves it up.
        deployed = bflow_in(home, "deploy", spec)
        assert deployed.returncode == 0, deployed.stderr
        assert "starting Prefect server on 127.0.0.1:" in deployed.stderr
        assert "using the bflow Prefect server at http://127.0.0.1:" in deployed.stderr
        assert "stopping" not in deployed.stderr
        assert "bflow-tick/tick: deployed, every 3 s (UTC)" in deployed.stdout
        assert "bflow-manual/manual: deployed, no schedule (runs only when started" in deployed.stdout
        assert "bflow-after/after: deployed, no schedule" in deployed.stdout
        server = server_record(home)
        assert pid_alive(server["pid"])
        api = server["api_url"]
        assert _deployment(api, "bflow-tick/tick")["status"] == "NOT_READY"  # nothing polls it yet

        # When serve starts, it uses that server (starts none), and the deployments read Ready.
        serve = bflow_started_in(home, "serve")
        out = Lines(serve)
        out.wait_for(f"serving bflow deployments from the bflow Prefect server at {api}", timeout=90)
        assert not [line for line in out.lines if "starting Prefect server" in line]
        for name in ("bflow-tick/tick", "bflow-manual/manual", "bflow-after/after"):
            wait_until(lambda n=name: _deployment(api, n)["status"] == "READY", 30, f"{name} Ready")

        # Then the schedule fires: at least two runs, each a completed job in `bflow list`.
        first = _wait_jobs("tick", 2, timeout=40)
        out.wait_for(f"started, job {first[-1]['id']}", timeout=5)  # serve prints each run's start
        out.wait_for(f"completed: job {first[-1]['id']}: completed", timeout=5)  # and its result
        assert bflow("logs", first[-1]["id"]).stdout == "first\nfirst\n"
        # the first run's new output started the deployed downstream, once
        assert [j["state"] for j in _wait_jobs("after", 1, timeout=30)] == ["completed"]
        assert bflow("logs", _jobs("after")[0]["id"]).stdout == "a\nb\n"
        # the second run found nothing changed: both shards reused, no downstream run
        assert _reused(first[0]["id"]) == 2
        out.wait_for(f"job {first[0]['id']}: completed (nothing changed: 2 of 2 shards reused", timeout=10)
        assert len(_jobs("after")) == 1

        # When one input file changes, only its shard runs, and the new output starts `after` again.
        (tmp_path / "data" / "b.txt").write_text("b, changed\n")
        changed = _wait_jobs("tick", 1, timeout=30, after=_now_iso())
        assert _reused(changed[-1]["id"]) == 1
        _wait_jobs("after", 2, timeout=30)
        assert bflow("logs", _jobs("after")[0]["id"]).stdout == "a\nb, changed\n"

        # When the command is edited and redeployed, the next run uses the new command.
        spec.write_text(SPEC.format(word="second"))
        after = _now_iso()  # runs re-read the spec: every job created from now on has the new command
        redeployed = bflow_in(home, "deploy", spec, "--json")
        assert redeployed.returncode == 0, redeployed.stderr
        updated = json.loads(redeployed.stdout)["deployments"]
        assert [(d["name"], d["pipeline"], d["action"], d["schedule"]) for d in updated] == [
            ("bflow-tick/tick", "tick", "updated", "every 3 s (UTC)"),
            ("bflow-manual/manual", "manual", "updated", "no schedule"),
            ("bflow-after/after", "after", "updated", "no schedule")]
        assert [d["id"] for d in updated] == [_deployment(api, d["name"])["id"] for d in updated]
        assert "starting Prefect server" not in redeployed.stderr
        newer = _wait_jobs("tick", 1, timeout=30, after=after)
        assert bflow("logs", newer[-1]["id"]).stdout == "second\nsecond\n"
        assert _reused(newer[-1]["id"]) == 0  # a changed command runs every shard

        # --delete removes both deployments; no tick run starts after that.
        deleted = bflow_in(home, "deploy", "--delete", spec)
        assert "bflow-tick/tick: deleted" in deleted.stdout and "bflow-manual/manual: deleted" in deleted.stdout
        assert "bflow-after/after: deleted" in deleted.stdout
        again = json.loads(bflow_in(home, "deploy", "--delete", spec, "--json").stdout)["deployments"]
        assert [(d["name"], d["action"], d["id"]) for d in again] == [
            ("bflow-tick/tick", "not deployed", None), ("bflow-manual/manual", "not deployed", None),
            ("bflow-after/after", "not deployed", None)]
        time.sleep(2)  # a run already claimed may still finish
        count = len(_jobs("tick"))
        time.sleep(4)
        assert len(_jobs("tick")) == count
        assert not _jobs("manual")  # never scheduled, never run

        # Ctrl-C stops serve; the server stays up, and its database keeps every run.
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=40) == 0
        out.wait_for("stopped", timeout=5)
        assert pid_alive(server["pid"]) and server_record(home)["pid"] == server["pid"]
        assert api_get(f"{api}/health") is True

        # `bflow server stop` stops it.
        stopped = bflow_in(home, "server", "stop")
        assert stopped.returncode == 0 and f"pid {server['pid']}" in stopped.stderr, stopped.stderr
        wait_until(lambda: not pid_alive(server["pid"]), 10, "the server's process gone")
        assert not (home / "prefect-server" / "server.json").exists()
    finally:
        if out is not None:
            print("bflow serve wrote:", *out.lines, sep="\n")  # shown when the test fails
        if serve is not None and serve.poll() is None:
            serve.kill()
            serve.wait()
        stop_server_of(home)


def test_deploy_bad_spec_fails_before_any_server(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("pipeline: x\ninput: {url: data}\ntransform: {cmd: 'true'}\nschedule: {every: 3}\n")
    result = bflow("deploy", spec)
    assert result.code == 2
    assert "x.schedule.every" in result.stderr
