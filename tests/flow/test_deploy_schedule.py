"""How a spec's `schedule` becomes a Prefect deployment schedule (no server needed)."""

from datetime import timedelta
from uuid import UUID

from bacalhau_flow.flow.deploy import (
    _prefect_schedule,
    deployment_name,
    describe_schedule,
    job_id_for,
)
from bacalhau_flow.flow.scheduled import job_id_of_run_name
from bacalhau_flow.spec import load_spec_text

BASE = "pipeline: p\ninput: {url: data}\ntransform: {cmd: 'true'}\n"


def _pipeline(extra: str = ""):
    return load_spec_text(BASE + extra)[0]


def test_cron_schedule_keeps_its_timezone():
    p = _pipeline("schedule: {cron: '0 6 * * 1-5', timezone: Europe/Lisbon}\n")
    [created] = _prefect_schedule(p)
    assert created.schedule.cron == "0 6 * * 1-5"
    assert created.schedule.timezone == "Europe/Lisbon"
    assert created.active
    assert describe_schedule(p) == "cron '0 6 * * 1-5' (Europe/Lisbon)"


def test_interval_schedule_in_seconds_defaults_to_utc():
    p = _pipeline("schedule: {interval: 5m}\n")
    [created] = _prefect_schedule(p)
    assert created.schedule.interval == timedelta(minutes=5)
    assert created.schedule.timezone == "UTC"
    assert describe_schedule(p) == "every 300 s (UTC)"


def test_pipeline_without_schedule_deploys_unscheduled():
    p = _pipeline()
    assert _prefect_schedule(p) == []
    assert describe_schedule(p) == "no schedule"
    assert deployment_name("p") == "bflow-p/p"


def test_job_ids_of_consecutive_flow_runs_differ_early():
    # Prefect's flow run ids are UUIDv7: consecutive ones share their first 12 hex digits.
    a = UUID("01a20225-c4eb-768c-9a72-1bd8aee81c82")
    b = UUID("01a20225-c4eb-7008-9019-149d867cbd98")
    assert job_id_for(a) != job_id_for(b)
    assert job_id_for(a)[:8] != job_id_for(b)[:8]
    assert job_id_for(a) == job_id_for(a) and len(job_id_for(a)) == len("j-") + 32


def test_the_deployment_entrypoint_names_the_body_serve_runs():
    import importlib

    from bacalhau_flow.flow.deploy import ENTRYPOINT
    from bacalhau_flow.flow.scheduled import scheduled_pipeline

    module, name = ENTRYPOINT.split(":")
    assert getattr(importlib.import_module(module), name) is scheduled_pipeline


def test_a_job_flow_run_names_its_job():
    # `bflow run` names a job's flow run by the job id, a rerun's `<job id>-rerun` (flow/rerun.py).
    assert job_id_of_run_name("j-0123456789abcdef") == "j-0123456789abcdef"
    assert job_id_of_run_name("j-0123456789abcdef-rerun") == "j-0123456789abcdef"
