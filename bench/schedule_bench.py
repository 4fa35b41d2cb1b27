"""From a schedule's tick to the first shard running, under `bflow serve`.

Starts `bflow serve` (which starts its own Prefect server) on a temporary $BFLOW_HOME,
deploys a pipeline with an interval schedule (local executor, `true`, reprocess: always so
every run really runs a shard), waits for RUNS runs, and for each reads:
- tick:        the flow run's scheduled time (Prefect API, expected_start_time)
- flow start:  when the flow run entered Running (Prefect API, start_time)
- job created: the job's creation (job store)
- first shard: the first shard attempt's start (job store)
- job ended:   the job's end (job store)
and prints the delays from the tick. Runs execute one at a time: with an interval shorter
than a run, each run starts later than the one before. serve looks for due runs every --poll seconds
(default 1), so about half a poll of the delay is waiting for the next look.

    python bench/schedule_bench.py [RUNS] [INTERVAL_S]     (default: 5 runs, every 3 s)
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

SPEC = """\
pipeline: tick
input: {{url: data}}
transform:
  cmd: ["true"]
reprocess: always
schedule: {{interval: {interval}}}
"""


def main(runs: int = 5, interval: float = 3) -> None:
    work = Path(tempfile.mkdtemp(prefix="bflow-schedule-bench-"))
    (work / "data").mkdir()
    (work / "data" / "a.txt").write_text("a\n")
    spec = work / "spec.yaml"
    spec.write_text(SPEC.format(interval=interval))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["BFLOW_HOME"] = str(work / "home")
    bflow = [sys.executable, "-m", "bacalhau_flow.cli"]

    t0 = time.monotonic()
    serve = subprocess.Popen([*bflow, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(x.rstrip()) for x in serve.stdout], daemon=True).start()
    try:
        while not any("serving bflow deployments" in x for x in lines):
            if serve.poll() is not None or time.monotonic() - t0 > 120:
                sys.exit("bflow serve did not start:\n" + "\n".join(lines))
            time.sleep(0.2)
        print(f"serve and its Prefect server up in {time.monotonic() - t0:.1f} s")
        url = json.loads((work / "home" / "prefect-server" / "server.json").read_text())["url"]
        subprocess.run([*bflow, "deploy", str(spec)], env=env, check=True, capture_output=True)
        db = sqlite3.connect(work / "home" / "jobs.sqlite")
        deadline = time.monotonic() + runs * interval + 60
        rows: list = []
        while time.monotonic() < deadline:
            try:
                rows = db.execute("SELECT id, created, flow_run_id, ended FROM jobs WHERE state='completed'"
                                  " AND flow_run_id IS NOT NULL ORDER BY created").fetchall()
            except sqlite3.OperationalError:  # no job yet: the store has no tables
                rows = []
            if len(rows) >= runs:
                break
            time.sleep(0.5)
        report(db, url, rows[:runs])
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(60)


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def report(db: sqlite3.Connection, url: str, rows: list) -> None:
    delays: dict[str, list[float]] = {"flow run start": [], "job created": [], "first shard": [], "job ended": []}
    print(f"{'run':>4} {'tick':>15} {'flow start':>11} {'job created':>12} {'first shard':>12} {'job ended':>12}")
    for i, (job_id, created, flow_run_id, ended) in enumerate(rows):
        with urllib.request.urlopen(f"{url}/flow_runs/{flow_run_id}") as response:
            run = json.load(response)
        tick = _ts(run["expected_start_time"])
        first = db.execute("SELECT MIN(started) FROM attempts WHERE job_id=?", (job_id,)).fetchone()[0]
        got = {"flow run start": _ts(run["start_time"]) - tick, "job created": created - tick,
               "first shard": first - tick, "job ended": ended - tick}
        for k, v in got.items():
            delays[k].append(v)
        print(f"{i:>4} {datetime.fromtimestamp(tick).strftime('%H:%M:%S.%f')[:-3]:>15} "
              + " ".join(f"{got[k]:>11.3f}s" for k in delays))
    if rows:
        print("median: " + ", ".join(f"{k} +{statistics.median(v):.3f} s" for k, v in delays.items()))
        print("max:    " + ", ".join(f"{k} +{max(v):.3f} s" for k, v in delays.items()))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 5, float(args[1]) if len(args) > 1 else 3)
