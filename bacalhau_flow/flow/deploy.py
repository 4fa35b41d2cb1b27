"""`bflow deploy` and `bflow serve`: pipelines as Prefect deployments with schedules.

A pipeline `p` becomes the deployment `bflow-p/p` (the flow is named as `bflow run` names
it), tagged `bflow` and `p`, with parameters {spec, pipeline, network} and the spec's
schedule. `serve()` polls the Prefect API for due scheduled runs of `bflow` deployments
and executes each in this process: it re-reads the spec (so edits apply without a
redeploy, except to the schedule) and runs the pipeline with `run_pipeline`, as a subflow
of the scheduled run, under a job id derived from the flow run's id; the job store keeps
that flow run id (`flow_run_id`) beside the job.

The Prefect API is `PREFECT_API_URL` when set, else the server a `bflow serve` of this
$BFLOW_HOME runs (flow/server.py). Prefect is imported only after that choice is made.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from ..errors import BflowError, JobCancelled
from ..home import configure_prefect
from ..spec import Pipeline, load_spec
from .server import PrefectServer, ServerError, healthy, running_server_url, server_home

TAG = "bflow"
MISSED_AFTER = timedelta(seconds=60)  # a run due this long before serve started was missed


class DeployError(BflowError):
    """A deployment could not be created, updated or removed."""


def deployment_name(pipeline: str) -> str:
    """`flow/deployment`, as `prefect deployment run` takes it."""
    return f"bflow-{pipeline}/{pipeline}"


def job_id_for(flow_run_id: UUID) -> str:
    """The job id of the job a scheduled flow run starts: same shape as new_job_id, and
    hashed, since Prefect's ids (UUIDv7) share long prefixes and job ids go by prefix."""
    return "j-" + hashlib.sha256(flow_run_id.bytes).hexdigest()[:32]


# -- which Prefect API ----------------------------------------------------------------
@dataclass
class Api:
    url: str
    source: str  # said to the user: where the url came from
    server: PrefectServer | None = None  # one we started and must stop

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def connect(start: bool, echo: Callable[[str], None]) -> Api:
    """Choose the Prefect API and point this process at it (before Prefect is imported):
    PREFECT_API_URL, else a running `bflow serve`'s server, else (when `start`) a new
    server on this $BFLOW_HOME's database. Raises ServerError when none can be had."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        if not healthy(url, timeout=10):
            raise ServerError(f"no Prefect server answers at PREFECT_API_URL={url}",
                              hint="start that server, or unset PREFECT_API_URL to let `bflow serve` "
                                   "run one under $BFLOW_HOME", retryable=True)
        api = Api(url, f"the Prefect server at PREFECT_API_URL={url}")
    else:
        if (url := running_server_url()) is not None:
            api = Api(url, f"the Prefect server of `bflow serve` at {url}")
        elif not start:
            raise ServerError("no Prefect server is running", hint="start one with `bflow serve`")
        else:
            echo(f"starting a Prefect server (state in {server_home()}) ...")
            server = PrefectServer.start()
            api = Api(server.url, f"a Prefect server started here at {server.url}", server)
        os.environ.setdefault("PREFECT_HOME", str(server_home()))  # the client's state under $BFLOW_HOME too
        os.environ["PREFECT_API_URL"] = api.url
    configure_prefect()
    return api


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


# -- deploy ---------------------------------------------------------------------------
def describe_schedule(pipeline: Pipeline) -> str:
    s = pipeline.schedule
    if s is None:
        return "no schedule"
    when = f"cron '{s.cron}'" if s.cron is not None else f"every {s.interval:g} s"
    return f"{when} ({s.timezone or 'UTC'})"


def _prefect_schedule(pipeline: Pipeline):
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    s = pipeline.schedule
    if s is None:
        return []
    tz = s.timezone or "UTC"
    if s.cron is not None:
        schedule = CronSchedule(cron=s.cron, timezone=tz)
    else:
        schedule = IntervalSchedule(interval=timedelta(seconds=s.interval), timezone=tz)
    return [DeploymentScheduleCreate(schedule=schedule, active=True)]


def deploy(spec: Path, *, network: str | None = None, delete: bool = False,
           echo: Callable[[str], None] = print) -> list[str]:
    """Create or update (or with `delete`, remove) the deployment of every pipeline in
    `spec`; return one line per pipeline saying what was done. Raises SpecError for a bad
    spec, ServerError / DeployError when the Prefect API fails."""
    pipelines = load_spec(spec)  # before any server starts: a bad spec fails fast
    spec_path = str(Path(spec).resolve())
    api = connect(start=True, echo=echo)
    echo(f"using {api.source}")
    import httpx
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    done: list[str] = []
    try:
        with _client() as client:
            for p in pipelines:
                name = deployment_name(p.name)
                try:
                    existing = client.read_deployment_by_name(name)
                except ObjectNotFound:
                    existing = None
                if delete:
                    if existing is None:
                        done.append(f"{name}: not deployed")
                    else:
                        client.delete_deployment(existing.id)
                        done.append(f"{name}: deleted")
                    continue
                flow_id = client.create_flow_from_name(f"bflow-{p.name}")
                client.create_deployment(
                    flow_id=flow_id, name=p.name, schedules=_prefect_schedule(p),
                    parameters={"spec": spec_path, "pipeline": p.name, "network": network},
                    tags=[TAG, p.name], description=p.description,
                    entrypoint="bacalhau_flow.flow.deploy:scheduled_pipeline", paused=False,
                )
                verb = "updated" if existing is not None else "deployed"
                line = f"{name}: {verb}, {describe_schedule(p)}"
                if p.schedule is None:
                    line += (f" (runs only when started: `prefect deployment run {name}` with "
                             "PREFECT_API_URL set to the server `bflow serve` names; serve executes it)")
                done.append(line)
    except PrefectHTTPStatusError as e:
        raise DeployError(f"the Prefect API refused the deployment: {e}",
                          hint=f"check {api.source}") from None
    except httpx.TransportError as e:
        raise ServerError(f"the Prefect API did not answer: {e}", hint=f"check {api.source}",
                          retryable=True) from None
    finally:
        if api.server is not None:
            echo("stopping the Prefect server; `bflow serve` starts it again and runs the schedules")
        api.close()
    return done


# -- serve ----------------------------------------------------------------------------
def scheduled_pipeline(spec: str, pipeline: str, network: str | None = None):
    """The body of a scheduled flow run: run `pipeline` of the spec file `spec` as it reads now."""
    from prefect.runtime import flow_run
    from prefect.states import Cancelled, Completed, Failed

    from .runner import run_pipeline

    found = [p for p in load_spec(spec) if p.name == pipeline]
    if not found:
        raise DeployError(f"{spec} no longer holds pipeline {pipeline!r}",
                          hint=f"redeploy with `bflow deploy {spec}` or remove it with --delete")
    run_id = UUID(flow_run.id)
    try:
        record = run_pipeline(found[0], network=network, job_id=job_id_for(run_id),
                              upstreams=_resolve_upstreams(found[0]))
    except JobCancelled as e:
        _Serve.interrupted = True
        return Cancelled(message=str(e))
    finally:
        _link_job(job_id_for(run_id), run_id)
    message = f"job {record.id}: {record.state}"
    reused = sum(s.state == "skipped" for s in record.shards)
    if reused and reused == len(record.shards):
        message += f" (nothing changed: {reused} of {reused} shards reused, none dispatched)"
    elif reused:
        message += f" ({reused} of {len(record.shards)} shards reused)"
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


def _trigger_downstreams(client, pipeline: str, job_id: str, echo) -> None:
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
            echo(f"{_clock()} {name}: started by new output of {pipeline} (job {job_id})")


def _link_job(job_id: str, flow_run_id: UUID) -> None:
    """Record in the job store which scheduled flow run a job answers (if the job exists)."""
    from ..home import jobs_db
    from ..jobs.store import JobStore

    store = JobStore(jobs_db())
    try:
        store.set_job(job_id, flow_run_id=str(flow_run_id))
    finally:
        store.close()


class _Serve:
    interrupted = False  # Ctrl-C (or SIGTERM) arrived: stop after the current run
    running = False  # a run is executing: Ctrl-C cancels its job (run_pipeline)


def _on_signal(signum, frame):
    _Serve.interrupted = True
    if _Serve.running:
        raise KeyboardInterrupt


def _due_runs(client, now: datetime):
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterNextScheduledStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[TAG]),
            deployment_id=FlowRunFilterDeploymentId(is_null_=False),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
            next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(before_=now),
        ),
        sort=FlowRunSort.NEXT_SCHEDULED_START_TIME_ASC, limit=20,
    )


def _when(run) -> datetime:
    return run.next_scheduled_start_time or run.expected_start_time


def _clock(t: datetime | None = None) -> str:
    return (t or datetime.now(UTC)).astimezone().strftime("%H:%M:%S")


def serve(*, poll: float = 1.0, echo: Callable[[str], None] = print) -> None:
    """Run the due scheduled runs of every `bflow` deployment, one at a time, until Ctrl-C
    (or SIGTERM); stop the Prefect server if this call started it. Raises ServerError
    when no server can be started or reached."""
    # Ctrl-C stops serve even when its parent started it with SIGINT ignored (`cmd &` in a script).
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    api = None
    try:
        _Serve.running = True  # Ctrl-C while the server starts stops at once
        try:
            api = connect(start=True, echo=echo)
        finally:
            _Serve.running = False
        echo(f"serving bflow deployments from {api.source}; Ctrl-C stops")
        import httpx
        from prefect.exceptions import PrefectHTTPStatusError
        from prefect.flows import flow

        api_errors = (httpx.TransportError, PrefectHTTPStatusError)
        body = flow(scheduled_pipeline, persist_result=False, validate_parameters=False, log_prints=False)
        started = datetime.now(UTC)
        failures = 0
        with _client() as client:
            _list_deployments(client, echo)
            while not _Serve.interrupted:
                try:
                    for run in _due_runs(client, datetime.now(UTC)):
                        _take(client, body, run, started, echo)
                        if _Serve.interrupted:
                            break
                    failures = 0
                except api_errors as e:
                    failures += 1
                    if failures > 30:
                        raise ServerError(f"the Prefect API stopped answering: {e}",
                                          hint=f"check {api.source}", retryable=True) from None
                    echo(f"{_clock()} warning: the Prefect API failed ({e}); trying again")
                if not _Serve.interrupted:
                    time.sleep(poll)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _Serve.interrupted = _Serve.running = False
        if api is not None and api.server is not None:
            _drain_prefect()
            echo("stopping the Prefect server ...")
        if api is not None:
            api.close()
    echo("stopped")


def _drain_prefect() -> None:
    """Send Prefect's queued logs and events now, while the server we stop still answers."""
    if "prefect" not in sys.modules:
        return
    from prefect._internal.concurrency.services import QueueService

    try:
        QueueService.drain_all(timeout=5)
    except Exception:  # noqa: BLE001, S110 - best effort: what is left is only Prefect's copy of the logs
        pass


def _take(client, body, run, started: datetime, echo) -> None:
    """Claim the due flow run `run` (Pending) and execute it here; skip a run another serve
    claimed or that was deleted (a redeploy replaces scheduled runs), cancel a missed one."""
    from prefect.exceptions import ObjectNotFound
    from prefect.flow_engine import run_flow
    from prefect.states import Cancelled, Pending

    pipeline = run.parameters.get("pipeline", "?")
    try:
        if _when(run) < started - MISSED_AFTER:
            client.set_flow_run_state(run.id, Cancelled(message="missed: bflow serve was not running"))
            echo(f"{_clock()} {pipeline}: run {run.name} due {_clock(_when(run))} was missed; skipped")
            return
        if client.set_flow_run_state(run.id, Pending()).status.value != "ACCEPT":
            return  # another serve took it
        run = client.read_flow_run(run.id)
    except ObjectNotFound:
        return
    echo(f"{_clock()} {pipeline}: run {run.name} (due {_clock(_when(run))}) started, job {job_id_for(run.id)}")
    _Serve.running = True
    try:
        state = run_flow(body.with_options(name=f"bflow-{pipeline}"), flow_run=run,
                         parameters=run.parameters, return_type="state")
        outcome = f"{state.type.value.lower()}: {state.message}"
        if state.is_completed():
            _trigger_downstreams(client, pipeline, job_id_for(run.id), echo)
    except KeyboardInterrupt:  # Ctrl-C outside the job itself
        _Serve.running = False
        client.set_flow_run_state(run.id, Cancelled(message="bflow serve stopped"), force=True)
        outcome = "cancelled: bflow serve stopped"
    finally:
        _Serve.running = False
    echo(f"{_clock()} {pipeline}: run {run.name} {outcome}")


def _list_deployments(client, echo) -> None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    found = client.read_deployments(deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[TAG])))
    if not found:
        echo("no bflow deployments yet: `bflow deploy SPEC` adds them (this serve picks them up)")
    for d in found:
        schedules = ", ".join(_schedule_text(s.schedule) for s in d.schedules) or "no schedule"
        echo(f"  bflow-{d.parameters.get('pipeline', d.name)}/{d.name}: {schedules}")


def _schedule_text(schedule) -> str:
    if getattr(schedule, "cron", None):
        return f"cron '{schedule.cron}' ({schedule.timezone or 'UTC'})"
    if getattr(schedule, "interval", None):
        return f"every {schedule.interval.total_seconds():g} s ({schedule.timezone or 'UTC'})"
    return type(schedule).__name__
