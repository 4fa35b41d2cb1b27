"""Compile a planned pipeline into a Prefect flow: one flow run per job, one task run
per pending shard (named by its index), with the spec's retries. Shards reused from an
earlier job (state skipped, flow/job_run.py) get no task run."""

from __future__ import annotations

import contextvars

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed

from .job_run import JobRun
from .task_runner import CURRENT_REQUESTER, NetworkTaskRunner

CURRENT_JOB: contextvars.ContextVar[JobRun] = contextvars.ContextVar("bflow_job")


@task(name="shard", task_run_name="shard-{index}", cache_policy=NO_CACHE, persist_result=False)
async def run_shard(index: int) -> dict:
    """Hand shard `index` of the current job to a compute node and await its result."""
    return await CURRENT_JOB.get().dispatch(CURRENT_REQUESTER.get(), index)


def compile_flow(run: JobRun, network: str | None = None, nodes: int = 3, run_name: str | None = None):
    """A Prefect flow that runs every shard of `run` and finishes the job."""
    pipeline = run.pipeline
    # The per-attempt `timeout` is enforced by the node on the command itself: a Prefect
    # task timeout would also count the time a shard waits in a busy node's queue.
    shard_task = run_shard.with_options(retries=pipeline.retries, retry_delay_seconds=0)

    def pipeline_flow():
        CURRENT_JOB.set(run)
        run.jobs.set_job(run.job.id, state="running")
        futures = shard_task.map(index=run.pending) if run.pending else []
        for future in futures:
            future.wait()
        job = run.finish()
        if job.state == "completed":
            reused = len(run.shards) - len(run.pending)
            return Completed(message=f"{len(run.pending)} shards completed, {reused} reused", data=job.cid)
        return Failed(message=job.error or "job failed")

    return flow(
        pipeline_flow,
        name=f"bflow-{pipeline.name}",
        flow_run_name=run_name or run.job.id,
        task_runner=NetworkTaskRunner(network, nodes),
        validate_parameters=False,
        persist_result=False,
        log_prints=False,
    )
