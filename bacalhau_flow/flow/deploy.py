"""`bflow deploy`: the pipelines of a spec as Prefect deployments, with their schedules.

A pipeline `p` becomes the deployment `bflow-p/p` (the flow is named as `bflow run` names
it), tagged `bflow` and `p`, with parameters {spec, pipeline, network} and the spec's
schedule. `bflow serve` (flow/serve.py) executes their runs; flow/scheduled.py is the body
of each run.

The Prefect API is `PREFECT_API_URL` when set, else the managed local server of this
$BFLOW_HOME (flow/server.py), started when none runs and left running. Prefect is imported
only after that choice is made.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ..errors import BflowError
from ..spec import Pipeline, load_spec
from .prefect_api import use_prefect
from .scheduled import TAG, job_id_for
from .server import ServerError

ENTRYPOINT = "bacalhau_flow.flow.scheduled:scheduled_pipeline"  # the body serve runs
NO_SCHEDULE = "no schedule"  # describe_schedule of a pipeline without one

__all__ = ["TAG", "Api", "DeployError", "Deployed", "connect", "deploy", "deployment_name", "describe_schedule",
           "job_id_for"]


class DeployError(BflowError):
    """A deployment could not be created, updated or removed."""


def deployment_name(pipeline: str) -> str:
    """`flow/deployment`, as `prefect deployment run` takes it."""
    return f"bflow-{pipeline}/{pipeline}"


# -- which Prefect API ----------------------------------------------------------------
@dataclass
class Api:
    url: str
    source: str  # said to the user: where the url came from


def connect(echo: Callable[[str], None]) -> Api:
    """Choose the Prefect API and point this process at it (before Prefect is imported):
    PREFECT_API_URL, else the managed server of this $BFLOW_HOME (flow/server.py), started
    when none runs. Raises ServerError when none can be had."""
    user_url = os.environ.get("PREFECT_API_URL")
    url = use_prefect(echo=echo)
    if url is None:  # Prefect was imported before (a user's own flow): the API that process uses
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value() or "(Prefect's ephemeral server)"
        return Api(url, f"the Prefect API of this process ({url})")
    if user_url:
        return Api(url, f"the Prefect server at PREFECT_API_URL={url}")
    return Api(url, f"the bflow Prefect server at {url} (UI {url.removesuffix('/api')})")


def client():
    """A synchronous Prefect client of the API `connect` chose."""
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


# -- deploy ---------------------------------------------------------------------------
@dataclass
class Deployed:
    """What `deploy` did to one pipeline's deployment: `action` is deployed, updated, deleted or
    "not deployed" (a --delete of a deployment that was not there)."""

    pipeline: str
    action: str
    schedule: str | None = None  # describe_schedule, for a deployment made or updated
    id: str | None = None  # the Prefect deployment's id, for one made or updated

    @property
    def name(self) -> str:
        return deployment_name(self.pipeline)

    def line(self) -> str:
        """`bflow-p/p: deployed, every 60 s (UTC)`: what `bflow deploy` prints."""
        if self.schedule is None:
            return f"{self.name}: {self.action}"
        line = f"{self.name}: {self.action}, {self.schedule}"
        if self.schedule == NO_SCHEDULE:
            line += (f" (runs only when started: `prefect deployment run {self.name}` with PREFECT_API_URL "
                     "set to the api `bflow server status` names; `bflow serve` executes it)")
        return line

    def to_json(self) -> dict:
        return {"name": self.name, "pipeline": self.pipeline, "action": self.action, "schedule": self.schedule,
                "id": self.id}


def describe_schedule(pipeline: Pipeline) -> str:
    s = pipeline.schedule
    if s is None:
        return NO_SCHEDULE
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
           echo: Callable[[str], None] = print) -> list[Deployed]:
    """Create or update (or with `delete`, remove) the deployment of every pipeline in
    `spec`; return what was done to each. Raises SpecError for a bad
    spec, ServerError / DeployError when the Prefect API fails."""
    pipelines = load_spec(spec)  # before any server starts: a bad spec fails fast
    spec_path = str(Path(spec).resolve())
    api = connect(echo=echo)
    echo(f"using {api.source}")
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    try:
        with client() as prefect:
            return [_deploy_one(prefect, p, spec_path, network, delete) for p in pipelines]
    except PrefectHTTPStatusError as e:
        raise DeployError(f"the Prefect API refused the deployment: {e}",
                          hint=f"check {api.source}") from None
    except httpx.TransportError as e:
        raise ServerError(f"the Prefect API did not answer: {e}", hint=f"check {api.source}",
                          retryable=True) from None


def _deploy_one(prefect, p: Pipeline, spec_path: str, network: str | None, delete: bool) -> Deployed:
    """Create, update or delete the deployment of pipeline `p`; what was done."""
    from prefect.exceptions import ObjectNotFound

    name = deployment_name(p.name)
    try:
        existing = prefect.read_deployment_by_name(name)
    except ObjectNotFound:
        existing = None
    if delete:
        if existing is None:
            return Deployed(p.name, "not deployed")
        prefect.delete_deployment(existing.id)
        return Deployed(p.name, "deleted")
    flow_id = prefect.create_flow_from_name(f"bflow-{p.name}")
    deployment_id = prefect.create_deployment(
        flow_id=flow_id, name=p.name, schedules=_prefect_schedule(p),
        parameters={"spec": spec_path, "pipeline": p.name, "network": network},
        tags=[TAG, p.name], description=p.description, entrypoint=ENTRYPOINT, paused=False,
    )
    return Deployed(p.name, "updated" if existing is not None else "deployed", describe_schedule(p),
                    str(deployment_id))


