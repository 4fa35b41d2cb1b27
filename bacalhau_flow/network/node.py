"""A compute node: takes shard requests, stages inputs, runs the executor, and answers
with a result whose outputs and logs are in its content store, by CID.

Subjects it serves:
- `bflow.node.<id>.run`    ShardRequest -> ShardResult (the reply comes when the shard ends)
- `bflow.node.<id>.cancel` {"attempt_id"} -> {"cancelled": bool}
- `bflow.nodes.discover`   answered by announcing NodeInfo on `bflow.nodes.announce`
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import __version__
from ..errors import BflowError
from ..executors import Execution, get_executor
from ..executors.registry import available_executors
from ..storage import ContentStore
from ..transports.base import Envelope, Transport
from .capacity import CapacityManager
from .messages import Capacity, NodeInfo, ShardRequest, ShardResult
from .staging import make_writable, stage_inputs

log = logging.getLogger("bacalhau_flow.node")

ANNOUNCE = "bflow.nodes.announce"
DISCOVER = "bflow.nodes.discover"


def run_subject(node_id: str) -> str:
    return f"bflow.node.{node_id}.run"


def cancel_subject(node_id: str) -> str:
    return f"bflow.node.{node_id}.cancel"


class ComputeNode:
    def __init__(
        self,
        transport: Transport,
        store: ContentStore,
        work_root: Path,
        capacity: Capacity,
        *,
        node_id: str | None = None,
        labels: dict[str, str] | None = None,
    ):
        self.id = node_id or "n-" + uuid.uuid4().hex[:8]
        self.transport = transport
        self.store = store
        self.work_root = Path(work_root)
        self.capacity = CapacityManager(capacity)
        self.labels = labels or {}
        self.executors = [e for e in available_executors() if _loadable(e)]
        self._running: dict[str, object] = {}  # attempt id -> executor running it
        self._seen: dict[str, asyncio.Future] = {}  # attempt id -> result (de-duplication)
        self._pool = ThreadPoolExecutor(max_workers=max(4, int(capacity.cpu * 10)), thread_name_prefix=self.id)
        self._subs = []

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        self.work_root.mkdir(parents=True, exist_ok=True)
        t = self.transport
        self._subs = [
            await t.subscribe(run_subject(self.id), self._on_run),
            await t.subscribe(cancel_subject(self.id), self._on_cancel),
            await t.subscribe(DISCOVER, self._on_discover),
        ]
        await self.announce()

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        for executor in list(self._running.values()):
            executor.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def info(self) -> NodeInfo:
        return NodeInfo(
            id=self.id,
            version=__version__,
            executors=self.executors,
            labels=self.labels,
            total=self.capacity.total,
            free=self.capacity.free,
            running=len(self._running),
        )

    async def announce(self) -> None:
        await self.transport.publish(ANNOUNCE, Envelope("node_info", self.info().model_dump(), sender=self.id))

    # -- handlers ---------------------------------------------------------------
    async def _on_discover(self, envelope: Envelope) -> None:
        await self.announce()

    async def _on_cancel(self, envelope: Envelope) -> Envelope:
        executor = self._running.get(envelope.body["attempt_id"])
        if executor is not None:
            executor.kill()
        return Envelope("cancelled", {"cancelled": executor is not None}, sender=self.id)

    async def _on_run(self, envelope: Envelope) -> Envelope:
        request = ShardRequest.model_validate(envelope.body)
        # The same attempt delivered twice runs once; the duplicate awaits the same result.
        if request.attempt_id not in self._seen:
            self._seen[request.attempt_id] = asyncio.ensure_future(self._run(request))
        result = await asyncio.shield(self._seen[request.attempt_id])
        return Envelope("shard_result", result.model_dump(), sender=self.id)

    # -- running a shard --------------------------------------------------------
    async def _run(self, request: ShardRequest) -> ShardResult:
        started = time.time()
        if not self.capacity.could_ever_fit(request.resources):
            return self._failed(request, started, f"shard asks for more than node {self.id} has", retryable=False)
        if request.transform.executor not in self.executors:
            return self._failed(request, started, f"node {self.id} has no {request.transform.executor} executor")
        await self.capacity.reserve(request.resources)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._run_blocking, request, started)
        finally:
            await self.capacity.release(request.resources)

    def _run_blocking(self, request: ShardRequest, started: float) -> ShardResult:
        work = self.work_root / request.job_id / f"{request.shard_index}-{request.attempt}"
        inputs, outputs = work / "inputs", work / "outputs"
        stdout, stderr = work / "stdout", work / "stderr"
        try:
            outputs.mkdir(parents=True, exist_ok=True)
            stdout.touch()
            stderr.touch()
            try:
                stage_inputs(request, inputs)
            except BflowError as e:
                stderr.write_text(f"bflow: {e}\n")
                return self._finish(request, started, stdout, stderr, None, "failed", None, str(e), retryable=e.retryable)
            executor = get_executor(request.transform.executor)
            self._running[request.attempt_id] = executor
            try:
                outcome = executor.run(self._execution(request, inputs, outputs, stdout, stderr))
            except BflowError as e:
                with stderr.open("a") as f:
                    f.write(f"bflow: {e}\n")
                return self._finish(request, started, stdout, stderr, None, "failed", None, str(e))
            finally:
                self._running.pop(request.attempt_id, None)
            outputs_cid = self.store.put_tree(outputs)
            state = "completed" if outcome.exit_code == 0 and not outcome.timed_out else "failed"
            error = outcome.error or (None if state == "completed" else f"exit code {outcome.exit_code}")
            return self._finish(request, started, stdout, stderr, outputs_cid, state, outcome.exit_code, error)
        except Exception as e:  # a bug or a broken disk: report it, never lose the shard silently
            log.exception("shard %s failed on node %s", request.attempt_id, self.id)
            return self._failed(request, started, f"node {self.id} failed: {e}", retryable=True)
        finally:
            make_writable(inputs)
            shutil.rmtree(work, ignore_errors=True)

    def _execution(self, request, inputs, outputs, stdout, stderr) -> Execution:
        t = request.transform
        env = dict(t.env)
        env.update(
            BFLOW_JOB_ID=request.job_id,
            BFLOW_PIPELINE=request.pipeline,
            BFLOW_SHARD_INDEX=str(request.shard_index),
            BFLOW_SHARD_COUNT=str(request.shard_count),
            BFLOW_SHARD_ID=request.shard_id,
        )
        return Execution(
            cmd=t.cmd,
            inputs_dir=inputs,
            outputs_dir=outputs,
            stdout_path=stdout,
            stderr_path=stderr,
            env=env,
            stdin=t.stdin,
            timeout=request.timeout,
            image=t.image,
            module=t.module,
            network=request.network,
            cpu=request.resources.cpu,
            memory_bytes=request.resources.memory,
        )

    def _finish(self, request, started, stdout, stderr, outputs_cid, state, exit_code, error, retryable=False):
        return ShardResult(
            job_id=request.job_id,
            shard_index=request.shard_index,
            shard_id=request.shard_id,
            attempt=request.attempt,
            node=self.id,
            state=state,
            exit_code=exit_code,
            error=error,
            retryable=retryable,
            outputs_cid=outputs_cid,
            stdout_cid=self.store.put_file(stdout),
            stderr_cid=self.store.put_file(stderr),
            started=started,
            ended=time.time(),
        )

    def _failed(self, request, started, error, retryable=True) -> ShardResult:
        stderr_cid = self.store.put_bytes(f"bflow: {error}\n".encode())
        return ShardResult(
            job_id=request.job_id,
            shard_index=request.shard_index,
            shard_id=request.shard_id,
            attempt=request.attempt,
            node=self.id,
            state="failed",
            error=error,
            retryable=retryable,
            stdout_cid=self.store.put_bytes(b""),
            stderr_cid=stderr_cid,
            started=started,
            ended=time.time(),
        )


def _loadable(name: str) -> bool:
    try:
        get_executor(name)
        return True
    except BflowError:
        return False
