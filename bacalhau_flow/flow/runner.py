"""Run a pipeline as a job: plan, record, compile to a Prefect flow, run, finish.

The job store is the record of truth; a Ctrl-C (KeyboardInterrupt) marks the job
cancelled and every unfinished shard cancelled, so nothing half-done reads as done.
"""

from __future__ import annotations

import os
from typing import Callable

from ..errors import JobCancelled
from ..home import bflow_home, configure_prefect, jobs_db, store_root
from ..jobs.publish import check_publish_url
from ..jobs.store import JobRecord, JobStore
from ..plan.pipeline import PipelinePlan, plan_pipeline
from ..spec import Pipeline
from ..storage import ContentStore


def run_pipeline(
    pipeline: Pipeline,
    *,
    plan: PipelinePlan | None = None,
    network: str | None = None,
    nodes: int = 3,
    job_id: str | None = None,
    on_progress: Callable[[int, str], None] | None = None,
) -> JobRecord:
    """Run one pipeline to its end and return its job record (completed or failed); a job
    that completed is published to `output.publish` (jobs/publish.py) before it reads so.
    Raises JobCancelled on Ctrl-C, PlanError for inputs that cannot be listed, PublishError
    (before anything runs) for a publish url whose protocol is not installed here."""
    configure_prefect()
    check_publish_url(pipeline)
    plan = plan or plan_pipeline(pipeline)
    jobs = JobStore(jobs_db())
    content = ContentStore(store_root())
    job = jobs.create_job(
        pipeline.name,
        [(s.index, s.id, [d.to_json() for d in s.datums]) for s in plan.shards],
        spec_file=pipeline.source_file,
        conflict=pipeline.output.conflict,
        job_id=job_id,
    )
    jobs.set_job(job.id, pid=os.getpid())

    from .compile import compile_flow
    from .job_run import JobRun

    run = JobRun(pipeline, plan.shards, job, jobs, content, bflow_home() / "scratch", on_progress)
    try:
        state = compile_flow(run, network, nodes)(return_state=True)
    except KeyboardInterrupt:
        jobs.cancel_unfinished_shards(job.id)
        jobs.set_job(job.id, state="cancelled", error="cancelled by the user")
        raise JobCancelled(f"job {job.id} cancelled", hint=f"`bflow describe {job.id[:10]}` shows what ran") from None
    record = jobs.get(job.id)
    if record.state in ("queued", "running"):
        # The flow ended without finishing the job (a crash in Prefect or in our code).
        message = getattr(state, "message", None) or "the flow run crashed"
        jobs.cancel_unfinished_shards(job.id)
        jobs.set_job(job.id, state="failed", error=message)
        record = jobs.get(job.id)
    if getattr(state, "is_cancelled", lambda: False)() and record.state != "cancelled":
        jobs.set_job(job.id, state="cancelled")
        record = jobs.get(job.id)
    jobs.close()
    return record
