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
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from functools import partial

from prefect import Flow, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.states import Cancelled, Completed, Failed

from .artifacts import publish_artifacts
from .cancel_watch import watch_for_cancel
from .job_run import JobRun, ShardCancelled, ShardFailed
from .prefect_api import TAG
from .task_runner import CURRENT_REQUESTER, NetworkTaskRunner
from .window import ShardReport

STOP_TIMEOUT = 30.0  # seconds a Ctrl-C waits for the job's shards to stop

CURRENT_JOB: contextvars.ContextVar[JobRun] = contextvars.ContextVar("bflow_job")
_IN_FLIGHT: dict[str, Callable[[str], None]] = {}  # job id -> stops it; while its flow runs


def stop_job(job_id: str, reason: str) -> bool:
    """Stop job `job_id` if its flow runs in this process (as Cancel in the UI does, from any
    thread); False when it does not run here."""
    stop = _IN_FLIGHT.get(job_id)
    if stop is not None:
        stop(reason)
    return stop is not None


@task(name="shard", task_run_name="shard-{index}", cache_policy=NO_CACHE, persist_result=False)
async def run_shard(index: int):
    """Hand shard `index` of the current job to a compute node and await its result. A failed
    attempt returns a Failed state (the shard's error as its message), a cancelled job a
    Cancelled one; every attempt that ran logs what it did (flow/window.py)."""
    run = CURRENT_JOB.get()
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
    return ShardReport.of(run.content, [d.to_json() for d in run.shards[index].datums], result)


def _wait(futures, timeout: float) -> None:
    """Wait for the shard futures, at most `timeout` s in all; a second Ctrl-C stops waiting."""
    deadline = time.monotonic() + timeout
    try:
        for future in futures:
            future.wait(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass


class JobFlow(Flow):
    """A job's flow: each call creates its flow run with the tags `run_tags`, and raises
    KeyboardInterrupt when Ctrl-C stopped the job (its flow run ended Cancelled first)."""

    run_tags: tuple[str, ...] = ()
    job_run: JobRun | None = None

    def __call__(self, *args, **kwargs):
        with tags(*self.run_tags):
            outcome = super().__call__(*args, **kwargs)
        if self.job_run is not None and self.job_run.interrupted:
            raise KeyboardInterrupt
        return outcome


def compile_flow(run: JobRun, network: str | None = None, nodes: int = 3, run_name: str | None = None) -> JobFlow:
    """A Prefect flow that runs every shard of `run` and finishes the job."""
    pipeline = run.pipeline
    # The per-attempt `timeout` is enforced by the node on the command itself: a Prefect
    # task timeout would also count the time a shard waits in a busy node's queue.
    shard_task = run_shard.with_options(retries=pipeline.retries, retry_delay_seconds=0)
    spec_file = None if pipeline.source_file.startswith("<") else pipeline.source_file

    # The parameters are what the UI shows of the run (the body uses `run`): as deployments have them.
    def pipeline_flow(spec: str | None = spec_file, pipeline: str = pipeline.name, network: str | None = network):
        CURRENT_JOB.set(run)
        run.jobs.set_job(run.job.id, state="running")
        context = FlowRunContext.get()
        runner = context.task_runner
        runner.watch(partial(watch_for_cancel, flow_run_id=context.flow_run.id, on_cancel=run.cancel))
        _IN_FLIGHT[run.job.id] = partial(runner.call_soon, run.cancel)
        futures = []
        try:
            futures = shard_task.map(index=run.pending) if run.pending else []
            for future in futures:
                future.wait()
        except KeyboardInterrupt:  # Ctrl-C: stop as Cancel does, end Cancelled, then re-raise (JobFlow)
            run.interrupted = True
            runner.call_soon(run.cancel, "cancelled by the user", wait=5.0)
            _wait(futures, STOP_TIMEOUT)
        finally:
            _IN_FLIGHT.pop(run.job.id, None)
        state = _end_state(run)
        publish_artifacts(run.jobs.get(run.job.id), run.content, context.client, context.flow_run.id)
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
    job_flow.run_tags, job_flow.job_run = (TAG, pipeline.name), run
    return job_flow


def _end_state(run: JobRun):
    """Finish the job (unless it was cancelled) and return the flow run's final state."""
    if run.cancelled is not None or run.interrupted:
        return Cancelled(message=f"job {run.job.id} {run.cancelled or 'cancelled by the user'}")
    job = run.finish()
    if job.state == "completed":
        reused = len(run.shards) - len(run.pending)
        return Completed(message=f"{len(run.pending)} shards completed, {reused} reused", data=job.cid)
    return Failed(message=job.error or "job failed")
