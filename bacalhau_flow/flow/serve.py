"""`bflow serve`: execute the runs of the `bflow` deployments in this process, until Ctrl-C.

Every `poll` seconds serve asks the Prefect API for the due runs of the bflow deployments
(`POST /deployments/get_scheduled_flow_runs`, as Prefect's own runners poll: it is what marks
those deployments Ready in the UI while serve runs; their ids are read again every
`DEPLOYMENTS_EVERY` seconds, so new deployments join within that). Each due run is claimed
(Prefect state Pending, so two serves never run one twice) and executed here, one at a time,
with flow/scheduled.py as its body. A run due more than `MISSED_AFTER` before serve started is
cancelled as missed rather than run late.

Retry in the Prefect UI sets a failed flow run to Scheduled "AwaitingRetry". Serve picks up
such runs of bflow's flows: a deployed run is run again (its body reruns the job it started,
so its job id stays unique), a job's own flow run (named by its job id: `bflow run`, the
subflow of a deployed run, a `-rerun`) is claimed the same way and run again as `bflow rerun`
of that job. Either way the retried flow run ends Completed or Failed with a message naming the
job. A retried run whose job this $BFLOW_HOME does not hold is left for the serve of its home.

Serve's Ctrl-C (or SIGTERM) stops serve, after cancelling the job it is running; the Prefect
server (flow/server.py) stays up.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from .deploy import Api, client, connect
from .scheduled import (
    TAG,
    find_job,
    job_id_for,
    job_id_of_run_name,
    retried_job,
    scheduled_pipeline,
    trigger_downstreams,
)
from .server import ServerError

MISSED_AFTER = timedelta(seconds=60)  # a run due this long before serve started was missed
DEPLOYMENTS_EVERY = 5.0  # seconds between reads of which bflow deployments there are
AWAITING_RETRY = "AwaitingRetry"  # the Scheduled state's name that Retry in the UI sets
API_FAILURES_ALLOWED = 30  # polls in a row the API may fail before serve gives up
JOB_PARAMETERS = ("spec", "pipeline", "network")  # a job's flow run's parameters (flow/compile.py)


class _Serve:
    interrupted = False  # Ctrl-C (or SIGTERM) arrived: stop after the current run
    running = False  # a run is executing: Ctrl-C cancels its job (run_pipeline)


def _on_signal(signum, frame):
    _Serve.interrupted = True
    if _Serve.running:
        raise KeyboardInterrupt


def _clock(t: datetime | None = None) -> str:
    return (t or datetime.now(UTC)).astimezone().strftime("%H:%M:%S")


def serve(*, poll: float = 1.0, echo: Callable[[str], None] = print) -> None:
    """Run the due runs of every `bflow` deployment, and the bflow flow runs retried from the
    UI, one at a time, until Ctrl-C (or SIGTERM). Raises ServerError when no Prefect server can
    be started or reached, or when it stops answering."""
    # Ctrl-C stops serve even when its parent started it with SIGINT ignored (`cmd &` in a script).
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    api = None
    try:
        _Serve.running = True  # Ctrl-C while the server starts stops at once
        try:
            api = connect(echo=echo)
        finally:
            _Serve.running = False
        echo(f"serving bflow deployments from {api.source}; Ctrl-C stops serve (the server stays up)")
        with client() as prefect:
            _Poller(prefect, api, echo).loop(poll)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _Serve.interrupted = _Serve.running = False
        if api is not None:
            _drain_prefect()
    echo("stopped")


class _Poller:
    """One serve's looks at the Prefect API, and what it does with what it finds."""

    def __init__(self, prefect, api: Api, echo: Callable[[str], None]):
        from prefect.flows import flow

        self.prefect, self.api, self.echo = prefect, api, echo
        self.started = datetime.now(UTC)
        self.deployment_ids: list = []
        self.deployments_read = float("-inf")
        self.announced = False  # the deployments found at the first read were listed
        self.left_alone: set = set()  # retried runs of another home's jobs: said once
        options = dict(persist_result=False, validate_parameters=False, log_prints=False)
        self.scheduled_body = flow(scheduled_pipeline, **options)
        self.retry_body = flow(retried_job, **options)

    def say(self, line: str) -> None:
        self.echo(f"{_clock()} {line}")

    def loop(self, poll: float) -> None:
        import httpx
        from prefect.exceptions import PrefectHTTPStatusError

        failures = 0
        while not _Serve.interrupted:
            try:
                self.once()
                failures = 0
            except (httpx.TransportError, PrefectHTTPStatusError) as e:
                failures += 1
                if failures > API_FAILURES_ALLOWED:
                    raise ServerError(f"the Prefect API stopped answering: {e}",
                                      hint=f"check {self.api.source} (`bflow server status`)", retryable=True) from None
                self.say(f"warning: the Prefect API failed ({e}); trying again")
            if not _Serve.interrupted:
                time.sleep(poll)

    def once(self) -> None:
        """One look: the bflow deployments' due runs (retries among them), then retried job runs."""
        if time.monotonic() - self.deployments_read >= DEPLOYMENTS_EVERY:
            self._read_deployments()
        for run in self._due_runs():
            if _Serve.interrupted:
                return
            retry = run.state is not None and run.state.name == AWAITING_RETRY
            self._take(run, retry=retry)
        for run in self._retried_job_runs():
            if _Serve.interrupted:
                return
            self._retry_job_run(run)

    # -- what is due ----------------------------------------------------------------------
    def _read_deployments(self) -> None:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

        found = self.prefect.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[TAG])))
        self.deployment_ids = [d.id for d in found]
        self.deployments_read = time.monotonic()
        if not self.announced:
            _list_deployments(found, self.echo)
            self.announced = True

    def _due_runs(self) -> list:
        """The Scheduled runs of the bflow deployments due now (AwaitingRetry ones too); the
        call marks those deployments Ready."""
        if not self.deployment_ids:
            return []
        return self.prefect.get_scheduled_flow_runs_for_deployments(
            self.deployment_ids, scheduled_before=datetime.now(UTC), limit=20)

    def _retried_job_runs(self) -> list:
        """The flow runs tagged bflow outside deployments that Retry set to AwaitingRetry."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterDeploymentId,
            FlowRunFilterState,
            FlowRunFilterStateName,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType

        found = self.prefect.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[TAG]),
            deployment_id=FlowRunFilterDeploymentId(is_null_=True),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]),
                                     name=FlowRunFilterStateName(any_=[AWAITING_RETRY])),
        ), limit=20)
        return [run for run in found if run.id not in self.left_alone]

    # -- running it -----------------------------------------------------------------------
    def _claim(self, run):
        """Set `run` Pending; the run as it is then, or None when another serve took it (or it
        was deleted: a redeploy replaces scheduled runs)."""
        from prefect.exceptions import ObjectNotFound
        from prefect.states import Pending

        try:
            if self.prefect.set_flow_run_state(run.id, Pending()).status.value != "ACCEPT":
                return None
            return self.prefect.read_flow_run(run.id)
        except ObjectNotFound:
            return None

    def _take(self, run, retry: bool = False) -> None:
        """Claim the due deployed run `run` and execute it here; cancel a missed one."""
        from prefect.exceptions import ObjectNotFound
        from prefect.states import Cancelled

        pipeline = run.parameters.get("pipeline", "?")
        due = run.next_scheduled_start_time or run.expected_start_time
        if not retry and due < self.started - MISSED_AFTER:
            try:
                self.prefect.set_flow_run_state(run.id, Cancelled(message="missed: bflow serve was not running"))
            except ObjectNotFound:
                return
            self.say(f"{pipeline}: run {run.name} due {_clock(due)} was missed; skipped")
            return
        run = self._claim(run)
        if run is None:
            return
        job_id = job_id_for(run.id)
        if retry:
            self.say(f"{pipeline}: run {run.name} retried from the UI, job {job_id}")
        else:
            self.say(f"{pipeline}: run {run.name} (due {_clock(due)}) started, job {job_id}")
        body = self.scheduled_body.with_options(name=f"bflow-{pipeline}")
        state = self._execute(run, body, run.parameters, label=f"{pipeline}: run {run.name}")
        if state is not None and state.is_completed():
            trigger_downstreams(self.prefect, pipeline, job_id, self.say)

    def _retry_job_run(self, run) -> None:
        """Claim the retried job flow run `run` and run it again as `bflow rerun` of its job."""
        if "pipelines" in (run.parameters or {}):  # a file's flow run (flow/chain.py), not one job's
            self._refuse(run, "Retry of a file's flow run is not supported: retry the flow run of the job "
                              "that failed (under it), or `bflow rerun JOB`")
            return
        job = find_job(job_id_of_run_name(run.name))
        if job is None:
            self.left_alone.add(run.id)
            self.say(f"run {run.name} was retried, but no job of this $BFLOW_HOME is named by it; "
                     "left for the `bflow serve` of the home that ran it")
            return
        run = self._claim(run)
        if run is None:
            return
        self.say(f"{job.pipeline}: run {run.name} retried from the UI: rerunning job {job.id}")
        parameters = {k: v for k, v in (run.parameters or {}).items() if k in JOB_PARAMETERS}
        body = self.retry_body.with_options(name=f"bflow-{job.pipeline}")
        self._execute(run, body, parameters, label=f"{job.pipeline}: run {run.name}")

    def _refuse(self, run, why: str) -> None:
        """End the retried run `run` Failed, saying `why` it is not run again."""
        from prefect.exceptions import ObjectNotFound
        from prefect.states import Failed

        self.left_alone.add(run.id)
        try:
            self.prefect.set_flow_run_state(run.id, Failed(message=why), force=True)
        except ObjectNotFound:
            return
        self.say(f"run {run.name}: {why}")

    def _execute(self, run, body, parameters: dict, label: str):
        """Run `body` as the claimed flow run `run`; its final state (None when Ctrl-C stopped it)."""
        from prefect.flow_engine import run_flow
        from prefect.states import Cancelled

        _Serve.running = True
        try:
            state = run_flow(body, flow_run=run, parameters=parameters, return_type="state")
        except KeyboardInterrupt:  # Ctrl-C outside the job itself
            _Serve.running = False
            self.prefect.set_flow_run_state(run.id, Cancelled(message="bflow serve stopped"), force=True)
            self.say(f"{label} cancelled: bflow serve stopped")
            return None
        finally:
            _Serve.running = False
        self.say(f"{label} {state.type.value.lower()}: {state.message}")
        return state


def _list_deployments(found, echo) -> None:
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


def _drain_prefect() -> None:
    """Send Prefect's queued logs and events now, before this process exits."""
    if "prefect" not in sys.modules:
        return
    from prefect._internal.concurrency.services import QueueService

    try:
        QueueService.drain_all(timeout=5)
    except Exception:  # noqa: BLE001, S110 - best effort: what is left is only Prefect's copy of the logs
        pass
