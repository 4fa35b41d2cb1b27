"""A `bflow run` on the command line, process start to exit, beside its floors, in one run.

On one $BFLOW_HOME whose managed Prefect server is already up (warm), each measured ROUNDS
times, alternating, median reported:
- validate: `bflow validate` of the spec (no Prefect at all: Python start and the spec)
- prefect:  a plain Prefect script (one flow, one task running `true`) against the same server:
            the floor any Prefect-based tool pays (importing Prefect alone is ~1.3 s here)
- bflow:    `bflow run` of a one-shard job running `true` (--reprocess, so the shard really runs)
Then the first `bflow run` on a fresh $BFLOW_HOME, which starts the managed server (cold; from the
prepared empty Prefect database where `bflow server prepare` made one, as scripts/setup.sh does).
Prints each median and the ratios bflow/prefect and bflow/validate.

    python bench/cli_bench.py [ROUNDS]      (default 5)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BFLOW = [sys.executable, "-m", "bacalhau_flow.cli"]
SPEC = "pipeline: one\ninput: {url: data}\ntransform: {cmd: ['true']}\n"
PLAIN = """\
import subprocess
from prefect import flow, task

@task
def run_true():
    subprocess.run(["true"], check=True)

@flow
def one():
    run_true()

one()
"""


def timed(cmd: list[str], env: dict, cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def environment(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["BFLOW_HOME"] = str(home)
    return env


def main(rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bflow-cli-bench-"))
    (work / "data").mkdir()
    (work / "data" / "a.txt").write_text("a\n")
    (work / "one.yaml").write_text(SPEC)
    (work / "plain.py").write_text(PLAIN)
    warm = environment(work / "warm-home")
    subprocess.run([*BFLOW, "server", "start"], env=warm, check=True, capture_output=True)
    status = subprocess.run([*BFLOW, "server", "status", "--json"], env=warm, check=True, capture_output=True)
    plain_env = dict(warm, PREFECT_API_URL=json.loads(status.stdout)["api_url"])
    bflow_run = [*BFLOW, "run", "one.yaml", "--reprocess"]
    timed(bflow_run, warm, work)  # first use of the content store, caches, page cache
    timed([sys.executable, "plain.py"], plain_env, work)

    times: dict[str, list[float]] = {"validate": [], "prefect": [], "bflow": []}
    for _ in range(rounds):
        times["validate"].append(timed([*BFLOW, "validate", "one.yaml"], warm, work))
        times["prefect"].append(timed([sys.executable, "plain.py"], plain_env, work))
        times["bflow"].append(timed(bflow_run, warm, work))
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:9s} median {median[name]:5.2f} s   (runs: {', '.join(f'{v:.2f}' for v in values)})")
    print(f"warm bflow run / plain Prefect script: {median['bflow'] / median['prefect']:.2f}x")
    print(f"warm bflow run / bflow validate:       {median['bflow'] / median['validate']:.1f}x")
    subprocess.run([*BFLOW, "server", "stop"], env=warm, capture_output=True)

    cold = environment(work / "cold-home")
    first = timed(bflow_run, cold, work)
    print(f"first bflow run on a fresh $BFLOW_HOME (starts the server): {first:.1f} s")
    subprocess.run([*BFLOW, "server", "stop"], env=cold, capture_output=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
