"""Compile a planned pipeline into a Prefect flow: one flow run per job, one task run
per pending shard (named by its index), with the spec's retries. Shards reused from an
earlier job (state skipped, flow/job_run.py) get no task run.

What the Prefect UI shows of a job (issue 9):

- the flow run carries the parameters spec (path), pipeline and network, and the tags `bflow`
  and the pipeline's name; when it ends, a table artifact of the job's shards and a markdown
  summary (flow/artifacts.py);
- each shard's task run has one log record per attempt (flow/window.py); a failed attempt
  ends in a Failed state whose message is the shard's error, returned rather than raised, so
  no traceback is recorded, and Prefect retries a returned Failed state as it retries an
  exception (`handle_success` -> `handle_retry` in prefect/task_engine.py);
- Cancel in the UI stops the job (flow/cancel_watch.py): its shards end Cancelled, the job
  is recorded cancelled and the flow run ends Cancelled.

The job flow is async, run by `asyncio.run` in the calling thread: Prefect's sync flow engine
joins its heartbeat thread when a run ends, which sleeps in 1 s steps (up to a second per
job); the async engine sends the same heartbeats and does not wait for that thread. Ctrl-C
reaches a `bflow` command through flow/interrupt.py: `stop_all` stops every job in flight as
Cancel does, with the run's `interrupted` flag set, so its flow ends Cancelled and JobFlow then
raises KeyboardInterrupt. Without that handler (a caller's own), Ctrl-C reaches the flow as
`asyncio.run` delivers it: as a cancellation of the flow's task, which the body turns into the
same stop. A SIGTERM while the body waits ends the same way, then ends the process as before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
from functools import partial

from prefect import Flow, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TagsContext
from prefect.exceptions import TerminationSignal
from prefect.states import Cancelled, Completed, Failed

from ..transports.redact import redacted
from .artifacts import publish_artifacts
from .collector import fewer_collections
from . import interrupt
from .cancel_watch import watch_for_cancel
from .job_run import JobRun, ShardCancelled, ShardFailed
from .prefect_api import TAG
from .task_runner import CURRENT_REQUESTER, NetworkTaskRunner
from .window import ShardReport

STOP_TIMEOUT = 30.0  # seconds a Ctrl-C waits for the job's shards to stop
ARTIFACTS_TIMEOUT = 0.5  # seconds a stopped job's flow waits for its artifacts to be recorded



class JobSlot:
    """The job a flow runs, reached only through this slot, which empties when the flow's call
    returns. Prefect keeps copies of the contexts a flow run ran in, and through them its flow
    and the context variables: the first run's for the process's lifetime (its services started
    there), later ones for a minute (cancelled timers of HTTP calls). Without the slot an ended
    job's shards and datums stayed in memory with them: ~0.4 kB a datum, in `bflow serve` too."""

    __slots__ = ("run",)

    def __init__(self, run: JobRun):
        self.run: JobRun | None = run


CURRENT_JOB: contextvars.ContextVar[JobSlot] = contextvars.ContextVar("bflow_job")
# job id -> (its run, its task runner, its flow run id); while its flow runs in this process
_IN_FLIGHT: dict[str, tuple[JobRun, NetworkTaskRunner, str]] = {}


def stop_job(job_id: str, reason: str, interrupted: bool = False) -> bool:
    """Stop job `job_id` if its flow runs in this process (as Cancel in the UI does, from any
    thread, a signal handler too: nothing here blocks); False when it does not run here. With
    `interrupted` (Ctrl-C), its flow raises KeyboardInterrupt once it ended (JobFlow)."""
    entry = _IN_FLIGHT.get(job_id)
    if entry is None:
        return False
    run, runner, _flow_run = entry
    if interrupted:
        run.interrupted = True
    runner.call_soon(run.cancel, reason)
    return True


def stop_all(reason: str) -> list[str]:
    """Ctrl-C (flow/interrupt.py): stop every job whose flow runs in this process; their ids."""
    return [job_id for job_id in list(_IN_FLIGHT) if stop_job(job_id, reason, interrupted=True)]


def flow_runs_in_flight() -> list[str]:
    """The flow run ids of the jobs whose flows run in this process."""
    return [flow_run for _run, _runner, flow_run in list(_IN_FLIGHT.values())]


@task(name="shard", task_run_name="shard-{index}", cache_policy=NO_CACHE, persist_result=False)
async def run_shard(index: int):
    """Hand shard `index` of the current job to a compute node and await its result. A failed
    attempt returns a Failed state (the shard's error as its message), a cancelled job a
    Cancelled one; every attempt that ran logs what it did (flow/window.py)."""
    run = CURRENT_JOB.get().run
    try:
        result = await run.dispatch(CURRENT_REQUESTER.get(), index)
    except ShardCancelled as e:
        return Cancelled(message=f"shard {index}: {e}")
    except ShardFailed as failure:
        if failure.result is None:  # no node can run it: nothing ran, nothing to show
            get_run_logger().error(str(failure))
            return Failed(message=str(failure))
        report = _report(run, index, failure.result)
        report.log_to(get_run_logger())
        return Failed(message=report.failure_message())
    _report(run, index, result).log_to(get_run_logger())
    return {"index": index, "node": result.node, "cid": result.outputs_cid, "exit_code": result.exit_code}


def _report(run: JobRun, index: int, result) -> ShardReport:
    return ShardReport.of(run.content, run.shards[index].datums_json, result)


async def _all_ended(futures, timeout: float | None = None) -> None:
    """Wait until every shard future has ended (at most `timeout` s). A shard that failed or
    was cancelled does not raise here: only a cancellation of the waiting task itself does."""
    if futures:
        await asyncio.wait([asyncio.wrap_future(f.wrapped_future) for f in futures], timeout=timeout)


async def _stop(run: JobRun, runner: NetworkTaskRunner, futures) -> None:
    """Ctrl-C: stop the job as Cancel does and wait for its shards, at most STOP_TIMEOUT s; a
    second Ctrl-C stops waiting."""
    run.interrupted = True
    runner.call_soon(run.cancel, "cancelled by the user", wait=5.0)
    try:
        await _all_ended(futures, STOP_TIMEOUT)
    except asyncio.CancelledError:
        asyncio.current_task().uncancel()


def _run_to_end(coroutine):
    """Run `coroutine` to its end with `asyncio.run`; in a thread of its own (with this
    context) when this thread already runs an event loop (bflow called from async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(interrupt.wakes_on_signals(coroutine))  # Ctrl-C handled at once
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bflow-flow") as pool:
        return interrupt.result_of(pool.submit(contextvars.copy_context().run, asyncio.run, coroutine))


class JobFlow(Flow):
    """A job's (async) flow, made by `compile_flow` and called once, like a sync one: the call
    runs its flow run to the end, with the tags `run_tags` (its shards' task runs only with the
    caller's), raises KeyboardInterrupt when Ctrl-C stopped the job (its flow run ended
    Cancelled first), and empties `slot`."""

    run_tags: tuple[str, ...] = ()
    outer_tags: frozenset[str] = frozenset()  # the caller's tags: its shards' task runs have these
    slot: JobSlot | None = None  # its job, until the call returns

    def serialize_parameters(self, parameters: dict) -> dict:
        """The parameters as the API stores them. A job's are strings or None, which Prefect's
        encoder (FastAPI's, ~0.3 s to import) would return as they are."""
        if all(value is None or isinstance(value, str) for value in parameters.values()):
            return dict(parameters)
        return super().serialize_parameters(parameters)

    def __call__(self, *args, **kwargs):
        nested = FlowRunContext.get() is not None  # a parent flow run's engine handles SIGTERM
        self.outer_tags = frozenset(TagsContext.get().current_tags)
        try:
            with tags(*self.run_tags), fewer_collections():  # flow/collector.py
                outcome = _run_to_end(super().__call__(*args, **kwargs))
        except TerminationSignal as e:
            # SIGTERM reached the event loop while the body waited: the job stopped as on Ctrl-C,
            # its flow run ended Cancelled. End the process as Prefect's engine does on SIGTERM:
            # by the handler that was there before Prefect's (the default one kills it).
            if not nested:
                os.kill(os.getpid(), e.signal)
            raise
        finally:
            run, self.slot.run = self.slot.run, None  # a job flow is called once
        if run is not None and run.interrupted:
            raise KeyboardInterrupt
        return outcome


def compile_flow(run: JobRun, network: str | None = None, nodes: int = 3, run_name: str | None = None) -> JobFlow:
    """A Prefect flow that runs every shard of `run` and finishes the job."""
    pipeline = run.pipeline
    # The per-attempt `timeout` is enforced by the node on the command itself: a Prefect
    # task timeout would also count the time a shard waits in a busy node's queue.
    shard_task = run_shard.with_options(retries=pipeline.retries, retry_delay_seconds=0)
    spec_file = None if pipeline.source_file.startswith("<") else pipeline.source_file
    slot = JobSlot(run)

    # The parameters are what the UI shows of the run (the body uses `run`): as deployments have them.
    async def pipeline_flow(spec: str | None = spec_file, pipeline: str = pipeline.name,
                            network: str | None = redacted(network)):  # no credentials in the UI
        run = slot.run
        CURRENT_JOB.set(slot)
        run.jobs.set_job(run.job.id, state="running")
        context = FlowRunContext.get()
        runner = context.task_runner
        runner.watch(partial(watch_for_cancel, flow_run_id=context.flow_run.id, on_cancel=run.cancel))
        _IN_FLIGHT[run.job.id] = (run, runner, str(context.flow_run.id))
        runner.call_soon(runner.requester.serve_job, run.job.id)  # named to its nodes (network/liveness.py)
        futures = []
        try:
            if interrupt.requested():  # Ctrl-C came while this flow started: dispatch nothing
                stop_job(run.job.id, "cancelled by the user", interrupted=True)
            # bflow's own tags are the flow run's alone: each tag of a task run costs it a
            # concurrency-limit call to the API (prefect/task_engine.py), one per shard
            with TagsContext(current_tags=set(job_flow.outer_tags)):
                futures = shard_task.map(index=run.pending) if run.pending else []
            await _all_ended(futures)
        except asyncio.CancelledError:  # Ctrl-C: stop as Cancel does, end Cancelled, then re-raise (JobFlow)
            asyncio.current_task().uncancel()
            await _stop(run, runner, futures)
        finally:
            _IN_FLIGHT.pop(run.job.id, None)
            runner.call_soon(runner.requester.serve_job, run.job.id, False)
        state, record = _end_state(run)
        artifacts = publish_artifacts(record, run.content, context.client, context.flow_run.id)
        if run.interrupted:  # the user is waiting for the prompt: the UI's table must not keep them
            try:
                await asyncio.wait_for(artifacts, ARTIFACTS_TIMEOUT)
            except Exception:  # noqa: BLE001 - a slow or gone API: the job store has the record
                pass
        else:
            await artifacts
        return state

    job_flow = JobFlow(
        pipeline_flow,
        name=f"bflow-{pipeline.name}",
        flow_run_name=run_name or run.job.id,
        task_runner=NetworkTaskRunner(network, nodes),
        validate_parameters=False,
        persist_result=False,
        log_prints=False,
    )
    job_flow.run_tags, job_flow.slot = (TAG, pipeline.name), slot
    return job_flow


def _end_state(run: JobRun):
    """Finish the job (unless it was cancelled); return the flow run's final state and the job's
    record as it ended (one read of the store for 10^3 shards is tens of ms)."""
    if run.cancelled is not None or run.interrupted:
        reason = run.cancelled or "cancelled by the user"
        return Cancelled(message=f"job {run.job.id} {reason}"), run.record()
    job = run.finish()
    if job.state == "completed":
        reused = len(run.shards) - len(run.pending)
        return Completed(message=f"{len(run.pending)} shards completed, {reused} reused", data=job.cid), job
    return Failed(message=job.error or "job failed"), job
