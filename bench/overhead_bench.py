"""Per-shard overhead of `bflow run` beside plain Prefect and raw subprocess, in one run.

For N trivial shards (local executor, `true`), three ways of doing the same work:
- raw:     `subprocess.run(["true"])` N times in a loop
- prefect: a plain Prefect flow mapping a task that runs `true`, on ThreadPoolTaskRunner; and
           the same flow again with the garbage collector's thresholds that bflow sets while a
           job runs (flow/collector.py), so that what that setting is worth shows apart
- bflow:   a pipeline of N datums (batch_size 1) through run_pipeline on the embedded network
The Prefect server is warmed up first so no one pays its start, and each run waits for the
server to digest the previous run's events. Prints ratios; the Prefect server's CPU time
is part of every Prefect-based figure. Then the CPU seconds of each Prefect-based run: this
process (its commands included) and the server during the run, since on a small machine the
two compete for the cores.

    python bench/overhead_bench.py [--rounds K] [N ...]     (default: 3 rounds of 1 100 1000)

Each size runs K rounds, plain Prefect and bflow in turn (the order swapped every other round,
each round with datums of its own), and ends with the median ratio and the range of the
rounds' ratios: on a 2-core machine that shares its cores with the Prefect server, one round's
ratio for the same code varies by up to ~25%.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

OWN_HOME = "BFLOW_HOME" not in os.environ  # then its Prefect server is stopped at the end
os.environ.setdefault("BFLOW_HOME", tempfile.mkdtemp(prefix="bflow-bench-"))
from bacalhau_flow.flow.prefect_api import use_prefect  # noqa: E402

use_prefect()

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from bacalhau_flow.flow.collector import fewer_collections  # noqa: E402
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


def prefect_same_gc(n: int) -> float:
    """The plain flow with the garbage collector's thresholds that bflow sets while a job runs
    (flow/collector.py): what of the gap is that setting, and what is the rest."""
    with fewer_collections():
        return prefect(n)


def bflow(n: int, root: Path, tag: str = "") -> float:
    data = root / f"data-{n}-{tag}"
    data.mkdir(exist_ok=True)
    for i in range(n):
        (data / f"d{i:05}").write_text("x" + tag)
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


def main(sizes: list[int], rounds: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bflow-bench-data-"))
    prefect(2)  # warm up the Prefect server and imports
    bflow(2, root)
    print("prefect: the plain flow; prefect+gc: the same with the collector's thresholds bflow sets "
          "while a job runs (flow/collector.py)")
    print(f"{'shards':>7} {'round':>6} {'raw s':>7} {'prefect s':>10} {'prefect+gc s':>13} {'bflow s':>8} "
          f"{'bflow ms/shard':>15} {'bflow/prefect':>14} {'bflow/prefect+gc':>17} {'bflow/raw':>10}")
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    for n in sizes:
        for k in range(1, rounds + 1):
            r = raw(n)
            settle()
            # each round its own datums (else bflow reuses the round before's results), and the
            # runs in turn, reversed every other round, so that a drift of the machine's speed
            # does not favour one
            order = [("prefect", lambda: prefect(n)), ("prefect+gc", lambda: prefect_same_gc(n)),
                     ("bflow", lambda: bflow(n, root, tag=str(k)))]
            measured = {}
            for name, call in order if k % 2 else order[::-1]:
                measured[name] = with_cpu(call)
                settle()
            p, g, b = (measured[name][0] for name in ("prefect", "prefect+gc", "bflow"))
            print(f"{n:>7} {k:>6} {r:>7.2f} {p:>10.2f} {g:>13.2f} {b:>8.2f} {1000 * b / n:>15.2f} "
                  f"{b / p:>14.2f} {b / g:>17.2f} {b / r:>10.2f}", flush=True)
            runs[n].append(measured)
    print(f"\nCPU seconds used during each run (this machine has {os.cpu_count()} cores):")
    print(f"{'shards':>7} {'round':>6} {'prefect proc':>13} {'its server':>11} {'bflow proc':>11} "
          f"{'its server':>11} {'proc ratio':>11}")
    for n in sizes:
        for k, measured in enumerate(runs[n], 1):
            (_p, p_cpu, p_server), (_b, b_cpu, b_server) = measured["prefect"], measured["bflow"]
            print(f"{n:>7} {k:>6} {p_cpu:>13.2f} {p_server:>11.2f} {b_cpu:>11.2f} {b_server:>11.2f} "
                  f"{b_cpu / max(p_cpu, 1e-9):>11.2f}")
    if rounds > 1:
        print(f"\nMedian of {rounds} rounds (the machine's speed varies between runs; a range is the rounds' ratios):")
        print(f"{'shards':>7} {'prefect s':>10} {'bflow s':>8} {'bflow/prefect':>14} {'range':>11} "
              f"{'bflow/prefect+gc':>17} {'range':>11}")
        for n in sizes:
            seconds = {name: [m[name][0] for m in runs[n]] for name in ("prefect", "prefect+gc", "bflow")}
            shipped = [b / p for p, b in zip(seconds["prefect"], seconds["bflow"])]
            same_gc = [b / g for g, b in zip(seconds["prefect+gc"], seconds["bflow"])]
            print(f"{n:>7} {median(seconds['prefect']):>10.2f} {median(seconds['bflow']):>8.2f} "
                  f"{median(shipped):>14.2f} {f'{min(shipped):.2f}-{max(shipped):.2f}':>11} "
                  f"{median(same_gc):>17.2f} {f'{min(same_gc):.2f}-{max(same_gc):.2f}':>11}")


if __name__ == "__main__":
    try:
        args = sys.argv[1:]
        rounds = 3
        if args[:1] == ["--rounds"]:
            rounds, args = int(args[1]), args[2:]
        main([int(a) for a in args] or [1, 100, 1000], rounds)
    finally:
        stop_own_server(OWN_HOME)
