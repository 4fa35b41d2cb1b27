"""NetworkTaskRunner: the one place where Prefect hands shards to compute nodes.

Prefect's task engine stays in this process (ARCHITECTURE.md decision 1): every
submitted task run executes here, on one event loop in a background thread, so
Prefect records states, retries and timeouts as usual. The shard task's body only
awaits `dispatch(...)`, which sends a JSON `ShardRequest` through the Requester to a
node; no code and no pickles cross the transport. One event loop for all task runs
keeps a thousand in-flight shards cheap (no thread per shard); they are started a few per
turn of the loop (flow/staggered.py), so that it keeps answering messages. The same loop runs
the job's Cancel watcher (`watch`, flow/cancel_watch.py) with the task runs' shared Prefect
client, and sends the shard tasks' log records in batches with that client (flow/shard_logs.py).

A closed runner's loop lingers (`_linger`): the job's flow goes on while its last batches of
log records are on their way to a server still digesting the job's events (0.2-0.4 s for
1000 shards, measured), as a plain Prefect flow's records go on in Prefect's log worker; the
process's exit waits for them, at most LOGS_TIMEOUT s.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import threading
from typing import Any, Iterable

from prefect.futures import PrefectConcurrentFuture, PrefectFuture
from prefect.task_runners import TaskRunner

from ..network.embedded import open_network
from ..network.requester import Requester
from . import shard_logs
from .shard_logs import CURRENT_SHARD_LOGS, ShardLogs
from .staggered import StaggeredStarts

CURRENT_REQUESTER: contextvars.ContextVar[Requester] = contextvars.ContextVar("bflow_requester")
LOGS_TIMEOUT = 5.0  # seconds a closed runner's loop waits for its batches of shard log records in flight
_LINGERING: set[threading.Thread] = set()  # the loops of closed runners, still sending their last records


@atexit.register
def _wait_for_lingering() -> None:
    for thread in list(_LINGERING):
        thread.join(LOGS_TIMEOUT)


class NetworkTaskRunner(TaskRunner[PrefectConcurrentFuture[Any]]):
    def __init__(self, network: str | None = None, nodes: int = 3):
        super().__init__()
        self.network = network
        self.nodes = nodes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._requester: Requester | None = None
        self._network_cm = None
        self._tasks: set[asyncio.Task] = set()
        self._starts: StaggeredStarts | None = None  # the task runs, a few per turn of the loop
        self._client_ctx = None  # one Prefect API client shared by every task run on the loop
        self._shard_logs: ShardLogs | None = None
        self._loop_ctx = contextvars.copy_context()

    def duplicate(self) -> "NetworkTaskRunner":
        return type(self)(network=self.network, nodes=self.nodes)

    # -- lifecycle --------------------------------------------------------------
    def __enter__(self) -> "NetworkTaskRunner":
        super().__enter__()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=_serve, args=(self._loop,), name="bflow-network", daemon=True)
        self._thread.start()
        self._starts = StaggeredStarts(self._loop)
        try:
            self._requester = self._call(self._open())
        except BaseException:
            self._stop_loop()
            super().__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        closed = False
        try:
            if self._loop is not None and self._loop.is_running():
                self._call(self._close(), timeout=60)
                closed = True
        finally:
            if closed:
                self._linger()
            else:
                self._stop_loop()
            super().__exit__(exc_type, exc_value, traceback)

    async def _open(self) -> Requester:
        from prefect.context import AsyncClientContext

        # Without a shared client, Prefect's async engine builds an HTTP client (and its
        # TLS context) for every task run: ~250 ms each on 2 cores.
        self._client_ctx = AsyncClientContext()
        await self._client_ctx.__aenter__()
        self._shard_logs = ShardLogs(self._client_ctx.client)
        shard_logs.install()
        self._network_cm = open_network(self.network, self.nodes)
        return await self._network_cm.__aenter__()

    async def _close(self) -> None:
        """All but the shared client, which the log batches in flight still use (`_linger`)."""
        self._starts.drop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)
        try:
            if self._shard_logs is not None:
                self._shard_logs.close()
            if self._network_cm is not None:
                await self._network_cm.__aexit__(None, None, None)
        except BaseException:
            await self._close_client()
            raise

    async def _close_client(self) -> None:
        if self._client_ctx is not None:
            client, self._client_ctx = self._client_ctx, None
            await client.__aexit__(None, None, None)

    def _linger(self) -> None:
        """Leave the loop running, without this runner, until the log batches in flight are
        sent (at most LOGS_TIMEOUT s); then close the shared client and stop it."""
        loop, self._loop = self._loop, None
        thread = self._thread
        _LINGERING.add(thread)

        async def wind_down() -> None:
            try:
                if self._shard_logs is not None:
                    await self._shard_logs.sent(LOGS_TIMEOUT)
                await self._close_client()
            finally:
                loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(wind_down(), context=self._loop_ctx))

    def _call(self, coro, timeout: float | None = None):
        """Run `coro` on the loop, always in the same context (so context managers
        entered in `_open` can be exited in `_close`), and wait for its result."""
        done: concurrent.futures.Future = concurrent.futures.Future()

        def start() -> None:
            task = self._loop.create_task(coro, context=self._loop_ctx)
            task.add_done_callback(lambda t: self._settle(t, done))

        self._loop.call_soon_threadsafe(start)
        return done.result(timeout)

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop = None

    @property
    def requester(self) -> Requester:
        if self._requester is None:
            raise RuntimeError("NetworkTaskRunner is not started")
        return self._requester

    def watch(self, watcher) -> None:
        """Run `watcher(client)` on the loop beside the task runs, with the shared async Prefect
        client, until it returns or the runner closes (flow/cancel_watch.py). Raises
        RuntimeError when the runner is not started."""
        if not self._started or self._loop is None or self._client_ctx is None:
            raise RuntimeError("NetworkTaskRunner is not started")
        client = self._client_ctx.client

        def start() -> None:
            task = self._loop.create_task(watcher(client), context=self._loop_ctx.copy())
            self._tasks.add(task)
            task.add_done_callback(self._forget)

        self._loop.call_soon_threadsafe(start)

    def call_soon(self, fn, *args, wait: float | None = None) -> None:
        """Call `fn(*args)` on the loop, from any thread (nothing when the runner has closed);
        with `wait`, return once it ran, or after `wait` s."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return
        ran = threading.Event()

        def call() -> None:
            try:
                fn(*args)
            finally:
                ran.set()

        loop.call_soon_threadsafe(call)
        if wait is not None:
            ran.wait(wait)

    def _forget(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            import logging

            logging.getLogger(__name__).warning("bflow watcher failed: %r", task.exception())

    # -- submitting -------------------------------------------------------------
    def submit(
        self,
        task,
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, Any] | None = None,
    ) -> PrefectConcurrentFuture[Any]:
        if not self._started or self._loop is None:
            raise RuntimeError("NetworkTaskRunner is not started")
        if not task.isasync:
            raise TypeError(f"NetworkTaskRunner runs async shard tasks only, not {task.name!r}")
        from prefect._internal.uuid7 import uuid7
        from prefect.task_engine import run_task_async

        task_run_id = uuid7()
        context = contextvars.copy_context()
        context.run(CURRENT_REQUESTER.set, self.requester)
        if self._shard_logs is not None:
            context.run(CURRENT_SHARD_LOGS.set, self._shard_logs)
        if self._client_ctx is not None:
            context.run(type(self._client_ctx).__var__.set, self._client_ctx)
        outcome: concurrent.futures.Future = concurrent.futures.Future()
        coro = run_task_async(
            task=task,
            task_run_id=task_run_id,
            parameters=parameters,
            wait_for=wait_for,
            return_type="state",
            dependencies=dependencies,
        )

        def started(t: asyncio.Task) -> None:
            self._tasks.add(t)
            t.add_done_callback(lambda done: self._settle(done, outcome))

        self._loop.call_soon_threadsafe(self._starts.start, coro, context, started, outcome.cancel)
        return PrefectConcurrentFuture(task_run_id=task_run_id, wrapped_future=outcome)

    def _settle(self, done: asyncio.Task, outcome: concurrent.futures.Future) -> None:
        self._tasks.discard(done)
        if outcome.done():
            return
        if done.cancelled():
            outcome.cancel()
        elif done.exception() is not None:
            outcome.set_exception(done.exception())
        else:
            outcome.set_result(done.result())


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The runner's thread: its loop, until stopped; then closed."""
    try:
        loop.run_forever()
    finally:
        loop.close()
        _LINGERING.discard(threading.current_thread())
