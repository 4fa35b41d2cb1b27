"""Per-shard overhead of `bflow run` beside plain Prefect and raw subprocess, in one run.

For N trivial shards (local executor, `true`), three ways of doing the same work:
- raw:     `subprocess.run(["true"])` N times in a loop
- prefect: a plain Prefect flow mapping a task that runs `true`, on ThreadPoolTaskRunner
- bflow:   a pipeline of N datums (batch_size 1) through run_pipeline on the embedded network
The Prefect server is warmed up first so no one pays its start, and each run waits for the
server to digest the previous run's events. Prints ratios; the Prefect server's CPU time
is part of every Prefect-based figure. Then the CPU seconds of each Prefect-based run: this
process (its commands included) and the server during the run, since on a small machine the
two compete for the cores.

    python bench/overhead_bench.py [N ...]     (default: 1 100 1000)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OWN_HOME = "BFLOW_HOME" not in os.environ  # then its Prefect server is stopped at the end
os.environ.setdefault("BFLOW_HOME", tempfile.mkdtemp(prefix="bflow-bench-"))
from bacalhau_flow.flow.prefect_api import use_prefect  # noqa: E402

use_prefect()

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from bacalhau_flow.flow.runner import run_pipeline  # noqa: E402
from prefect_server import cpu_seconds, server_pid, settle, stop_own_server  # noqa: E402
from bacalhau_flow.spec import load_spec_text  # noqa: E402


@task(cache_policy=NO_CACHE, persist_result=False)
def run_true(i: int) -> int:
    return subprocess.run(["true"]).returncode


@flow(task_runner=ThreadPoolTaskRunner(max_workers=16), persist_result=False)
def plain_flow(n: int) -> int:
    return sum(f.result() for f in run_true.map(range(n)))


def raw(n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(["true"])
    return time.perf_counter() - t


def prefect(n: int) -> float:
    t = time.perf_counter()
    assert plain_flow(n) == 0
    return time.perf_counter() - t


def bflow(n: int, root: Path) -> float:
    data = root / f"data-{n}"
    data.mkdir(exist_ok=True)
    for i in range(n):
        (data / f"d{i:05}").write_text("x")
    spec = f"pipeline: bench{n}\ninput: {{url: {data}, glob: '/*'}}\ntransform: {{cmd: ['true']}}\nresources: {{cpu: 0.1}}\n"
    (pipeline,) = load_spec_text(spec)
    t = time.perf_counter()
    job = run_pipeline(pipeline)
    elapsed = time.perf_counter() - t
    assert job.state == "completed", job.error
    return elapsed


def process_cpu() -> float:
    """CPU seconds of this process and its waited-for children so far."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def with_cpu(run) -> tuple[float, float, float]:
    """(seconds, this process's CPU seconds, the server's CPU seconds) of `run()`."""
    pid = server_pid()
    mine, server = process_cpu(), cpu_seconds(pid)
    elapsed = run()
    return elapsed, process_cpu() - mine, cpu_seconds(pid) - server


def main(sizes: list[int]) -> None:
    root = Path(tempfile.mkdtemp(prefix="bflow-bench-data-"))
    prefect(2)  # warm up the Prefect server and imports
    bflow(2, root)
    print(f"{'shards':>7} {'raw s':>8} {'prefect s':>10} {'bflow s':>8} {'bflow ms/shard':>15} "
          f"{'bflow/prefect':>14} {'bflow/raw':>10}")
    cpu = []
    for n in sizes:
        r = raw(n)
        settle()
        p, p_cpu, p_server = with_cpu(lambda: prefect(n))
        settle()
        b, b_cpu, b_server = with_cpu(lambda: bflow(n, root))
        settle()
        print(f"{n:>7} {r:>8.2f} {p:>10.2f} {b:>8.2f} {1000 * b / n:>15.2f} {b / p:>14.2f} {b / r:>10.2f}",
              flush=True)
        cpu.append((n, p_cpu, p_server, b_cpu, b_server))
    print(f"\nCPU seconds used during each run (this machine has {os.cpu_count()} cores):")
    print(f"{'shards':>7} {'prefect proc':>13} {'its server':>11} {'bflow proc':>11} {'its server':>11} "
          f"{'proc ratio':>11}")
    for n, p_cpu, p_server, b_cpu, b_server in cpu:
        print(f"{n:>7} {p_cpu:>13.2f} {p_server:>11.2f} {b_cpu:>11.2f} {b_server:>11.2f} "
              f"{b_cpu / max(p_cpu, 1e-9):>11.2f}")


if __name__ == "__main__":
    try:
        main([int(a) for a in sys.argv[1:]] or [1, 100, 1000])
    finally:
        stop_own_server(OWN_HOME)
