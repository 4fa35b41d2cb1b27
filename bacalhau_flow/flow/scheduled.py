"""The bodies of the flow runs `bflow serve` executes (flow/serve.py).

- `scheduled_pipeline`: a run of the deployment `bflow-p/p` runs pipeline p of its spec file as
  the file reads now, as job `job_id_for(flow run id)`, the pipeline's job flow a subflow of the
  run; the job store keeps the flow run id beside the job.
- The same flow run run again (Retry in the Prefect UI: Prefect's AwaitingRetry) does not start
  a second job under that id: when the job exists, it is rerun (flow/rerun.py): its failed shards
  run again as new attempts of the same job, the rerun a subflow of the retried run.
- `retried_job`: a job's own flow run (named by its job id: a `bflow run`, the subflow of a
  deployed run, or a `<job id>-rerun`) retried from the UI is a rerun of that job too.

Each body returns the flow run's final state (Completed / Failed / Cancelled with a message
naming the job), so nothing here raises into Prefect's engine for a job that merely failed.
"""

from __future__ import annotations

import hashlib
from uuid import UUID

from ..errors import BflowError, JobCancelled
from ..spec import Pipeline, load_spec
from .prefect_api import TAG

RERUN_SUFFIX = "-rerun"  # flow/rerun.py names a rerun's flow run `<job id>-rerun`


def job_id_for(flow_run_id: UUID) -> str:
    """The job id of the job a deployed flow run starts: same shape as new_job_id, and
    hashed, since Prefect's ids (UUIDv7) share long prefixes and job ids go by prefix."""
    return "j-" + hashlib.sha256(flow_run_id.bytes).hexdigest()[:32]


def job_id_of_run_name(name: str) -> str:
    """The job a job's flow run ran, from the run's name (`j-...` or `j-...-rerun`)."""
    return name.removesuffix(RERUN_SUFFIX)


def find_job(job_id: str):
    """The record of job `job_id` (exactly that id) in this $BFLOW_HOME's store, or None."""
    from ..home import jobs_db
    from ..jobs.store import JobStore

    store = JobStore(jobs_db())
    try:
        record = store.get(job_id, with_shards=False)
    except BflowError:
        return None
    finally:
        store.close()
    return record if record.id == job_id else None


def scheduled_pipeline(spec: str, pipeline: str, network: str | None = None):
    """The body of a deployed flow run: run `pipeline` of the spec file `spec` as it reads now;
    when the run ran before (a retry) and its job exists, rerun that job instead. Raises
    DeployError when the spec no longer holds the pipeline."""
    from prefect.runtime import flow_run

    from .deploy import DeployError

    run_id = UUID(flow_run.id)
    job_id = job_id_for(run_id)
    if find_job(job_id) is not None:
        return rerun_state(job_id, network)
    found = [p for p in load_spec(spec) if p.name == pipeline]
    if not found:
        raise DeployError(f"{spec} no longer holds pipeline {pipeline!r}",
                          hint=f"redeploy with `bflow deploy {spec}` or remove it with --delete")
    return _run_state(found[0], job_id, run_id, network)


def retried_job(spec: str | None = None, pipeline: str | None = None, network: str | None = None):
    """The body of a job's flow run retried from the UI: rerun the job the run is named by.
    The parameters are the run's own (compile.py gives a job's flow run spec, pipeline, network)."""
    from prefect.runtime import flow_run

    return rerun_state(job_id_of_run_name(flow_run.name), network)


def _run_state(pipeline: Pipeline, job_id: str, run_id: UUID, network: str | None):
    from prefect.states import Cancelled, Completed, Failed

    from .runner import run_pipeline

    try:
        record = run_pipeline(pipeline, network=network, job_id=job_id, upstreams=_resolve_upstreams(pipeline))
    except JobCancelled as e:
        return Cancelled(message=str(e))
    finally:
        _link_job(job_id, run_id)
    message = f"job {record.id}: {record.state}"
    reused = sum(s.state == "skipped" for s in record.shards)
    if reused and reused == len(record.shards):
        message += f" (nothing changed: {reused} of {reused} shards reused, none dispatched)"
    elif reused:
        message += f" ({reused} of {len(record.shards)} shards reused)"
    if record.state == "completed":
        return Completed(message=message, data=record.id)
    return Failed(message=message + (f": {record.error}" if record.error else ""))


def rerun_state(job_id: str, network: str | None):
    """`bflow rerun JOB` of the job's failed shards, as a flow run's final state: Completed or
    Failed naming the job, the shards rerun and their attempts; Failed with the reason (and its
    hint) when the job cannot be rerun (flow/rerun.py RerunError: still running, spec changed)."""
    from prefect.states import Cancelled, Completed, Failed

    from .rerun import rerun_job

    try:
        record, chosen = rerun_job(job_id, network=network)
    except JobCancelled as e:
        return Cancelled(message=str(e))
    except BflowError as e:
        return Failed(message=f"job {job_id} was not rerun: {e}" + (f" (hint: {e.hint})" if e.hint else ""))
    if not chosen:
        message = f"job {record.id}: {record.state}, nothing to rerun (no shard failed)"
    else:
        attempts = ", ".join(f"shard {s.index} attempt {s.attempts}" for s in record.shards if s.index in chosen)
        message = f"job {record.id}: {record.state} after a rerun ({attempts})"
    if record.state == "completed":
        return Completed(message=message, data=record.id)
    return Failed(message=message + (f": {record.error}" if record.error else ""))


def _resolve_upstreams(pipeline: Pipeline) -> list:
    """Point the pipeline's pipeline:// inputs at their pipelines' latest completed outputs
    (a deployment runs one pipeline, not its file's DAG); a located SpecError if one has none."""
    if not pipeline.upstreams:
        return []
    from .dag import build_dag

    return build_dag([pipeline]).resolve(pipeline, {})


def _link_job(job_id: str, flow_run_id: UUID) -> None:
    """Record in the job store which deployed flow run a job answers (if the job exists)."""
    from ..home import jobs_db
    from ..jobs.store import JobStore

    store = JobStore(jobs_db())
    try:
        store.set_job(job_id, flow_run_id=str(flow_run_id))
    finally:
        store.close()


def trigger_downstreams(client, pipeline: str, job_id: str, echo) -> None:
    """A deployed pipeline that completed with new output starts the deployed pipelines that
    read it (`pipeline://NAME`), exactly once: the flow run's idempotency key names the
    upstream job, so a second call, or a second serve, creates nothing. Output equal to the
    previous completed run's (nothing changed upstream) starts nothing."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    from ..home import jobs_db
    from ..jobs.store import JobStore

    store = JobStore(jobs_db())
    try:
        job = store.get(job_id, with_shards=False)
        previous = store.latest_job(pipeline, "completed", before=job.created)
    except BflowError:
        return
    finally:
        store.close()
    if job.state != "completed" or (previous is not None and previous.cid == job.cid):
        return
    found = client.read_deployments(deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[TAG])))
    for deployment in found:
        spec, name = deployment.parameters.get("spec"), deployment.parameters.get("pipeline")
        try:
            readers = [p for p in load_spec(spec) if p.name == name and pipeline in p.upstreams]
        except BflowError:
            continue  # a spec that no longer loads: its own runs say why
        if readers:
            client.create_flow_run_from_deployment(deployment.id, tags=[TAG, name],
                                                   idempotency_key=f"bflow-after-{job_id}")
            echo(f"{name}: started by new output of {pipeline} (job {job_id})")
