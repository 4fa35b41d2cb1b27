"""`bflow rerun JOB [--shard N ...]`: run some shards of an ended job again, in that job.

Decisions:

- By default the shards that did not succeed (failed, cancelled, or left queued/running by a
  crash: an `interrupted` job, which `bflow resume` can also continue) run again; `--shard N` picks shards, also completed or skipped ones.
- They run as new attempts of the same job: earlier attempts stay recorded (`bflow logs
  --attempt`), the shard records, the merged outputs CID and the job state are updated, so
  `bflow describe` and `bflow get` show the job as it is after the rerun. The spec's retries
  apply again, counted from the rerun's first attempt.
- The pipeline comes from the job's spec file as it is now. A rerun must not mix results of two
  transforms in one job: when the transform's key (jobs/content_key.py) differs from the one
  the job ran with, the rerun is refused and `bflow run` is the answer (it reuses every shard
  whose inputs and transform are unchanged). Inputs are read as they are now; each rerun
  shard's content key is recomputed, so later runs reuse its new result correctly.
- One Prefect flow run per rerun, named `<job id>-rerun`, one task run per rerun shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import BflowError
from ..home import bflow_home, jobs_db, store_root
from ..jobs.store import JobRecord, JobStore
from ..plan.datum import Datum, Shard
from ..storage import ContentStore
from ..transports.redact import redacted
from . import interrupt
from .runner import cancelled_error

UNFINISHED = ("failed", "cancelled", "queued", "running")


class RerunError(BflowError):
    """A job cannot be rerun as asked (still running, spec gone or changed, no such shard)."""


def rerun_job(prefix: str, shards: list[int] | None = None, *, network: str | None = None, nodes: int = 3,
              on_progress: Callable[[int, str], None] | None = None) -> tuple[JobRecord, list[int]]:
    """Rerun shards of job `prefix`; return (the job's record afterwards, the shard indices that
    ran). Raises JobNotFound, RerunError, JobCancelled on Ctrl-C."""
    jobs = JobStore(jobs_db())
    try:
        record = jobs.get(prefix)
        pipeline = _pipeline_of(record)
        chosen = _chosen(record, shards)
        if not chosen:
            return record, []
        return _rerun(record, pipeline, chosen, jobs, network, nodes, on_progress), chosen
    finally:
        jobs.close()


def _pipeline_of(record: JobRecord):
    if record.state in ("queued", "running"):  # its owner still drives it (else it reads interrupted)
        raise RerunError(f"job {record.id} is still running",
                         hint=f"wait for it, or stop it with `bflow cancel {record.id[:10]}`")
    spec = record.spec_file
    if not spec or not Path(spec).is_file():
        raise RerunError(f"job {record.id}: its spec file {spec or '(none recorded)'} is not there any more",
                         hint="run the pipeline again with `bflow run SPEC`; unchanged shards are reused")
    from ..jobs.content_key import transform_key
    from ..spec import load_spec

    found = [p for p in load_spec(spec) if p.name == record.pipeline]
    if not found:
        raise RerunError(f"job {record.id}: {spec} has no pipeline {record.pipeline!r} any more",
                         hint="run the spec again with `bflow run SPEC`")
    pipeline = found[0]
    # pipeline:// inputs read what the job read then (its recorded upstream CIDs), not a newer output
    pipeline.resolve_upstreams({u["pipeline"]: f"ipfs://{u['cid']}" for u in getattr(record, "upstreams", [])})
    if pipeline.upstreams - {u["pipeline"] for u in getattr(record, "upstreams", [])}:
        raise RerunError(f"job {record.id}: its spec now reads pipelines it did not read when it ran",
                         hint=f"run it as a new job: `bflow run {spec}`")
    if record.transform_key and transform_key(pipeline) != record.transform_key:
        raise RerunError(
            f"job {record.id}: the transform of {record.pipeline} in {spec} changed since the job ran; "
            "a rerun would mix results of two transforms in one job",
            hint=f"run it as a new job: `bflow run {spec}` (shards whose inputs and transform are unchanged are reused)")
    return pipeline


def _chosen(record: JobRecord, shards: list[int] | None) -> list[int]:
    if not shards:
        return [s.index for s in record.shards if s.state in UNFINISHED]
    known = {s.index for s in record.shards}
    missing = sorted(set(shards) - known)
    if missing:
        where = f"shards 0..{len(known) - 1}" if known else "no shards"
        raise RerunError(f"job {record.id} has no shard {missing[0]}", hint=f"it has {where}")
    return sorted(set(shards))


def _rerun(record: JobRecord, pipeline, chosen: list[int], jobs: JobStore, network, nodes, on_progress) -> JobRecord:
    from ..jobs.content_key import ContentKeys
    from .prefect_api import use_prefect

    use_prefect()
    from .compile import compile_flow
    from .job_run import JobRun

    plan = [Shard(pipeline.name, s.index, tuple(Datum.from_json(d) for d in s.datums)) for s in record.shards]
    keys = ContentKeys(pipeline, jobs).keys([plan[i] for i in chosen])
    jobs.claim(record.id)  # this process drives it from now on (jobs/owner.py)
    jobs.requeue_shards(record.id, dict(zip(chosen, keys)))
    jobs.set_job(record.id, network=redacted(network))
    job = jobs.get(record.id)
    run = JobRun(pipeline, plan, job, jobs, ContentStore(store_root()), bflow_home() / "scratch", on_progress,
                 pending=chosen)
    return run_to_end(jobs, job.id, lambda: compile_flow(run, network, nodes, run_name=f"{job.id}-rerun")(
        return_state=True))


def run_to_end(jobs: JobStore, job_id: str, start: Callable[[], object]) -> JobRecord:
    """Run an existing job's flow (`start()` returns its final Prefect state) and return the
    job's record: a Ctrl-C marks it and its unfinished shards cancelled (JobCancelled), a flow
    that ended without finishing the job (a crash) marks it failed. For rerun and resume."""
    try:
        with interrupt.watching():
            state = start()
    except KeyboardInterrupt:
        jobs.cancel_unfinished_shards(job_id)
        jobs.set_job(job_id, state="cancelled", error="cancelled by the user")
        raise cancelled_error(job_id) from None
    after = jobs.get(job_id)
    if after.state in ("queued", "running"):  # the flow ended without finishing the job
        jobs.cancel_unfinished_shards(job_id)
        jobs.set_job(job_id, state="failed", error=getattr(state, "message", None) or "the flow run crashed")
        after = jobs.get(job_id)
    return after

