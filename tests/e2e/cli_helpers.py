"""Run `bflow` in this process (fast: one Prefect server for the session) or as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from bacalhau_flow.cli.main import app
from bacalhau_flow.testing.remote import Outcome

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"


def bflow(*args: str | Path) -> Outcome:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def bflow_process(*args: str | Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bacalhau_flow.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ), **popen)


def write_spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def wait_for_running_shard(pipeline: str, timeout: float = 60):
    """The first (job, shard) of `pipeline` seen running on a node, polling the job store."""
    import time

    from bacalhau_flow.home import jobs_db
    from bacalhau_flow.jobs.store import JobStore

    store = JobStore(jobs_db())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in store.list_jobs(limit=20):
            if job.pipeline == pipeline and job.state == "running":
                running = [s for s in store.get(job.id).shards if s.state == "running" and s.node]
                if running:
                    return job, running[0]
        time.sleep(0.1)
    raise AssertionError(f"no shard of {pipeline} started running within {timeout:g}s")


def run_in_thread(*args):
    """Run `bflow` in a thread; returns the thread and a dict that holds the Outcome as "r"."""
    import threading

    holder = {}
    thread = threading.Thread(target=lambda: holder.setdefault("r", bflow(*args)))
    thread.start()
    return thread, holder
