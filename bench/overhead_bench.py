"""Per-shard overhead of `bflow run` beside plain Prefect and raw subprocess, in one run.

For N trivial shards (local executor, `true`), four ways of doing the same work:
- raw:     `subprocess.run(["true"])` N times in a loop
- prefect: a plain Prefect flow mapping a task that runs `true`, on ThreadPoolTaskRunner; and
           the same flow again with the garbage collector's thresholds that bflow sets while a
           job runs (flow/collector.py), so that what that setting is worth shows apart. Also
           timed to its last task's end (`prefect tasks`), without its flow run's end: a floor
           that the 1 s steps of its heartbeat's join (below) do not move
- async:   a plain Prefect flow mapping an async task that runs `true` in a worker thread, all
           its task runs on one event loop in one thread sharing one API client (Prefect's
           async task engine), as bflow's task runner runs them (flow/task_runner.py): what
           the gap owes to that engine beside the sync one, and what bflow's own work per
           shard is
- bflow:   a pipeline of N datums (batch_size 1) through run_pipeline on the embedded network
The Prefect server is warmed up first so no one pays its start, and each run waits for the
server to digest the previous run's events. Prints ratios; the Prefect server's CPU time
is part of every Prefect-based figure. Then the CPU seconds of each Prefect-based run: this
process (its commands included), and the server's during the run (on a small machine the two
compete for the cores) and in all (until it has digested the run's events: for the plain flow
most of that comes after its run has ended).

    python bench/overhead_bench.py [--rounds K] [N ...]     (default: 3 rounds of 1 100 1000)

Each size runs K rounds, the Prefect flows and bflow in turn (the order swapped every other round,
each round with datums of its own), and ends with the median ratio and the range of the
rounds' ratios: on a 2-core machine that shares its cores with the Prefect server, one round's
ratio for the same code varies by up to ~25%. The plain (sync) flow's times fall on a grid of
whole seconds plus ~0.06 s: when a run ends, Prefect's sync flow engine joins its heartbeat
thread, which sleeps in 1 s steps (20 shards: ~1.06 s, beside ~0.2 s on the async engine).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

OWN_HOME = "BFLOW_HOME" not in os.environ  # then its Prefect server is stopped at the end
os.environ.setdefault("BFLOW_HOME", tempfile.mkdtemp(prefix="bflow-bench-"))
from bacalhau_flow.flow.prefect_api import use_prefect  # noqa: E402

use_prefect()

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.futures import PrefectConcurrentFuture  # noqa: E402
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner  # noqa: E402

from bacalhau_flow.flow.collector import fewer_collections  # noqa: E402
from bacalhau_flow.flow.runner import run_pipeline  # noqa: E402
from prefect_server import cpu_seconds, server_pid, settle, stop_own_server  # noqa: E402
from bacalhau_flow.spec import load_spec_text  # noqa: E402


@task(cache_policy=NO_CACHE, persist_result=False)
def run_true(i: int) -> int:
    return subprocess.run(["true"]).returncode


TASKS_ENDED = [0.0]  # when the plain flow's last task result came back (perf_counter)


@flow(task_runner=ThreadPoolTaskRunner(max_workers=16), persist_result=False)
def plain_flow(n: int) -> int:
    total = sum(f.result() for f in run_true.map(range(n)))
    TASKS_ENDED[0] = time.perf_counter()
    return total


class OneLoopTaskRunner(TaskRunner):
    """Every task run on one event loop in a thread of its own, sharing one API client, as
    bflow's runner has them (flow/task_runner.py), with none of bflow's work: Prefect's async
    task engine alone. Without the shared client the engine builds one per task run."""

    def duplicate(self) -> "OneLoopTaskRunner":
        return type(self)()

    def __enter__(self) -> "OneLoopTaskRunner":
        from prefect.context import AsyncClientContext

        super().__enter__()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._loop_ctx = contextvars.copy_context()

        async def shared_client() -> AsyncClientContext:
            # made on the runner's loop: made in the flow's thread, it would take the flow
            # engine's client, bound to that thread's loop, and every task run would build a
            # client of its own (prefect.context.AsyncClientContext.get_or_create)
            context = AsyncClientContext()
            return await context.__aenter__()

        self._client_ctx = self._on_loop(shared_client())
        return self

    def __exit__(self, *exc) -> None:
        self._on_loop(self._client_ctx.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        super().__exit__(*exc)

    def _on_loop(self, coro):
        """Run `coro` on the loop, always in the same context (the client's context variable is
        set in one task and reset in another), and return its result."""
        done: concurrent.futures.Future = concurrent.futures.Future()

        def finished(task: asyncio.Task) -> None:
            if task.exception() is not None:
                done.set_exception(task.exception())
            else:
                done.set_result(task.result())

        def start() -> None:
            self._loop.create_task(coro, context=self._loop_ctx).add_done_callback(finished)

        self._loop.call_soon_threadsafe(start)
        return done.result()

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        from prefect._internal.uuid7 import uuid7
        from prefect.task_engine import run_task_async

        task_run_id, outcome = uuid7(), concurrent.futures.Future()
        coro = run_task_async(task=task, task_run_id=task_run_id, parameters=parameters, wait_for=wait_for,
                              return_type="state", dependencies=dependencies)

        def finished(done: asyncio.Task) -> None:
            if done.exception() is not None:
                outcome.set_exception(done.exception())
            else:
                outcome.set_result(done.result())

        def start() -> None:
            self._loop.create_task(coro).add_done_callback(finished)

        context = contextvars.copy_context()
        context.run(type(self._client_ctx).__var__.set, self._client_ctx)
        self._loop.call_soon_threadsafe(start, context=context)
        return PrefectConcurrentFuture(task_run_id=task_run_id, wrapped_future=outcome)


@task(cache_policy=NO_CACHE, persist_result=False)
async def run_true_async(i: int) -> int:
    return (await asyncio.to_thread(subprocess.run, ["true"])).returncode


@flow(task_runner=OneLoopTaskRunner(), persist_result=False)
async def async_flow(n: int) -> int:
    futures = run_true_async.map(range(n))
    await asyncio.wait([asyncio.wrap_future(f.wrapped_future) for f in futures])
    return sum([await f.wrapped_future.result().aresult() for f in futures])


def raw(n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(["true"])
    return time.perf_counter() - t


LAST_TASKS = [0.0]  # the last plain flow's time to its last task's end (`prefect`)


def prefect(n: int) -> float:
    t = time.perf_counter()
    assert plain_flow(n) == 0
    LAST_TASKS[0] = TASKS_ENDED[0] - t  # without its flow run's end: the final state, the heartbeat's join
    return time.perf_counter() - t


def prefect_same_gc(n: int) -> float:
    """The plain flow with the garbage collector's thresholds that bflow sets while a job runs
    (flow/collector.py): what of the gap is that setting, and what is the rest."""
    with fewer_collections():
        return prefect(n)


def prefect_async(n: int) -> float:
    """The plain flow's work on Prefect's async task engine, all task runs on one loop."""
    t = time.perf_counter()
    assert asyncio.run(async_flow(n)) == 0
    return time.perf_counter() - t


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


def with_cpu(run) -> tuple[float, float, float, float]:
    """(seconds, this process's CPU seconds, the server's CPU seconds during the run, and the
    server's in all: until it has digested the run's events, which for the plain flow is
    mostly after the run has ended) of `run()`; returns once the server has settled."""
    pid = server_pid()
    mine, server = process_cpu(), cpu_seconds(pid)
    elapsed = run()
    used, during = process_cpu() - mine, cpu_seconds(pid) - server
    settle()
    return elapsed, used, during, cpu_seconds(pid) - server


BASELINES = ("prefect", "prefect+gc", "async")  # each beside bflow, as bflow/<name>


def main(sizes: list[int], rounds: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bflow-bench-data-"))
    prefect(2)  # warm up the Prefect server and imports
    prefect_async(2)
    bflow(2, root)
    print("prefect: the plain flow; prefect+gc: the same with the collector's thresholds bflow sets "
          "while a job runs (flow/collector.py); async: the same work on Prefect's async task engine, "
          "one event loop and one API client, as bflow's runner")
    ratios = "".join(f" {'bflow/' + name:>17}" for name in BASELINES)
    print("prefect tasks: the plain flow's time to its last task's end, without its flow run's end (its final "
          "state, and the join of its heartbeat thread, which sleeps in 1 s steps): a floor")
    print(f"{'shards':>7} {'round':>6} {'raw s':>7} {'prefect s':>10} {'prefect tasks s':>16} {'prefect+gc s':>13} "
          f"{'async s':>8} {'bflow s':>8} {'bflow ms/shard':>15}{ratios} {'bflow/prefect tasks':>20} {'bflow/raw':>10}")
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    tasks: dict[int, list[float]] = {n: [] for n in sizes}  # the plain flow's time to its last task's end
    for n in sizes:
        for k in range(1, rounds + 1):
            r = raw(n)
            settle()
            # each round its own datums (else bflow reuses the round before's results), and the
            # runs in turn, reversed every other round, so that a drift of the machine's speed
            # does not favour one
            order = [("prefect", lambda: prefect(n)), ("prefect+gc", lambda: prefect_same_gc(n)),
                     ("async", lambda: prefect_async(n)), ("bflow", lambda: bflow(n, root, tag=str(k)))]
            measured = {}
            for name, call in order if k % 2 else order[::-1]:
                measured[name] = with_cpu(call)
                if name == "prefect":
                    tasks[n].append(LAST_TASKS[0])
            p, g, a, b = (measured[name][0] for name in ("prefect", "prefect+gc", "async", "bflow"))
            ratios = "".join(f" {b / measured[name][0]:>17.2f}" for name in BASELINES)
            print(f"{n:>7} {k:>6} {r:>7.2f} {p:>10.2f} {tasks[n][-1]:>16.2f} {g:>13.2f} {a:>8.2f} {b:>8.2f} "
                  f"{1000 * b / n:>15.2f}{ratios} {b / tasks[n][-1]:>20.2f} {b / r:>10.2f}", flush=True)
            runs[n].append(measured)
    print(f"\nCPU seconds used during each run (this machine has {os.cpu_count()} cores):")
    print("(its server: the server's CPU during the run / in all, the digesting of the run's events after it included)")
    print(f"{'shards':>7} {'round':>6} {'prefect proc':>13} {'its server':>12} {'async proc':>11} "
          f"{'bflow proc':>11} {'its server':>12} {'proc ratio':>11} {'server ratio':>13}")
    for n in sizes:
        for k, measured in enumerate(runs[n], 1):
            (_p, p_cpu, p_during, p_all), (_a, a_cpu, _d, _s), (_b, b_cpu, b_during, b_all) = (
                measured["prefect"], measured["async"], measured["bflow"])
            print(f"{n:>7} {k:>6} {p_cpu:>13.2f} {f'{p_during:.2f}/{p_all:.2f}':>12} {a_cpu:>11.2f} {b_cpu:>11.2f} "
                  f"{f'{b_during:.2f}/{b_all:.2f}':>12} {b_cpu / max(p_cpu, 1e-9):>11.2f} {b_all / max(p_all, 1e-9):>13.2f}")
    if rounds > 1:
        print(f"\nMedian of {rounds} rounds (the machine's speed varies between runs; a range is the rounds' ratios):")
        columns = "".join(f" {'bflow/' + name:>17} {'range':>11}" for name in (*BASELINES, "prefect tasks"))
        print(f"{'shards':>7} {'prefect s':>10} {'async s':>8} {'bflow s':>8}{columns}")
        for n in sizes:
            seconds = {name: [m[name][0] for m in runs[n]] for name in (*BASELINES, "bflow")}
            line = f"{n:>7} {median(seconds['prefect']):>10.2f} {median(seconds['async']):>8.2f} {median(seconds['bflow']):>8.2f}"
            for base_seconds in (*(seconds[name] for name in BASELINES), tasks[n]):
                each = [b / base for base, b in zip(base_seconds, seconds["bflow"])]
                line += f" {median(each):>17.2f} {f'{min(each):.2f}-{max(each):.2f}':>11}"
            print(line)


if __name__ == "__main__":
    try:
        args = sys.argv[1:]
        rounds = 3
        if args[:1] == ["--rounds"]:
            rounds, args = int(args[1]), args[2:]
        main([int(a) for a in args] or [1, 100, 1000], rounds)
    finally:
        stop_own_server(OWN_HOME)
