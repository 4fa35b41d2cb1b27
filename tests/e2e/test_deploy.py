"""`bflow deploy` and `bflow serve` against a real Prefect server that serve starts and stops.

One scenario (a Prefect server takes ~10-20 s to start here): serve, deploy an interval
schedule, see runs fire into the job store, redeploy an edited command, delete, Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC
from pathlib import Path

import pytest
from cli_helpers import bflow

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


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # as a user's shell
    env["BFLOW_HOME"] = str(home)
    return env


def _bflow(home: Path, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bacalhau_flow.cli", *map(str, args)], env=_env(home),
                          capture_output=True, text=True, timeout=timeout, check=False)


class Lines:
    """The lines a process writes to stdout, read by a thread, so tests can wait for one."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            time.sleep(0.1)
        raise AssertionError(f"no line with {text!r} within {timeout:g}s; got:\n" + "\n".join(self.lines))


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


def test_deploy_serve_redeploy_delete_and_stop(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("BFLOW_HOME", str(home))  # for `bflow list/logs` in this process
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a\n")
    (tmp_path / "data" / "b.txt").write_text("b\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(word="first"))

    serve = subprocess.Popen([sys.executable, "-m", "bacalhau_flow.cli", "serve"], env=_env(home),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Lines(serve)
    try:
        out.wait_for("serving bflow deployments from a Prefect server started here", timeout=90)
        server_pid = json.loads((home / "prefect-server" / "server.json").read_text())["pid"]

        # Given serve runs its own server, deploy finds and uses it.
        deployed = _bflow(home, "deploy", spec)
        assert deployed.returncode == 0, deployed.stderr
        assert "of `bflow serve`" in deployed.stderr
        assert "bflow-tick/tick: deployed, every 3 s (UTC)" in deployed.stdout
        assert "bflow-manual/manual: deployed, no schedule (runs only when started" in deployed.stdout
        assert "bflow-after/after: deployed, no schedule" in deployed.stdout

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
        redeployed = _bflow(home, "deploy", spec)
        assert "bflow-tick/tick: updated, every 3 s (UTC)" in redeployed.stdout, redeployed.stderr
        newer = _wait_jobs("tick", 1, timeout=30, after=after)
        assert bflow("logs", newer[-1]["id"]).stdout == "second\nsecond\n"
        assert _reused(newer[-1]["id"]) == 0  # a changed command runs every shard

        # --delete removes both deployments; no tick run starts after that.
        deleted = _bflow(home, "deploy", "--delete", spec)
        assert "bflow-tick/tick: deleted" in deleted.stdout and "bflow-manual/manual: deleted" in deleted.stdout
        assert "bflow-after/after: deleted" in deleted.stdout
        time.sleep(2)  # a run already claimed may still finish
        count = len(_jobs("tick"))
        time.sleep(4)
        assert len(_jobs("tick")) == count
        assert not _jobs("manual")  # never scheduled, never run

        # Ctrl-C stops serve and the server it started.
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=40) == 0
        out.wait_for("stopped", timeout=5)
        with pytest.raises(ProcessLookupError):
            os.kill(server_pid, 0)
        assert not (home / "prefect-server" / "server.json").exists()
    finally:
        print("bflow serve wrote:", *out.lines, sep="\n")  # shown when the test fails
        if serve.poll() is None:
            serve.kill()
            serve.wait()


def test_deploy_without_serve_starts_a_server_for_the_deploy_only(tmp_path):
    home = tmp_path / "home"
    (tmp_path / "data").mkdir()
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(word="x"))
    result = _bflow(home, "deploy", spec)
    assert result.returncode == 0, result.stderr
    assert "starting a Prefect server" in result.stderr and "stopping the Prefect server" in result.stderr
    assert "bflow-tick/tick: deployed, every 3 s (UTC)" in result.stdout
    assert not (home / "prefect-server" / "server.json").exists()  # the server is gone again
    # The deployments stay in that server's database, for `bflow serve` to run.
    db = sqlite3.connect(home / "prefect-server" / "prefect.db")
    names = {name for (name,) in db.execute("SELECT name FROM deployment")}
    db.close()
    assert names == {"tick", "manual", "after"}


def test_deploy_bad_spec_fails_before_any_server(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("pipeline: x\ninput: {url: data}\ntransform: {cmd: 'true'}\nschedule: {every: 3}\n")
    result = bflow("deploy", spec)
    assert result.code == 2
    assert "x.schedule.every" in result.stderr
