"""Retry in the Prefect UI, against `bflow serve` and the managed server of a home of its own.

The UI's Retry sets a failed flow run to Scheduled "AwaitingRetry" (done here as the UI does,
through the REST API). Serve takes it as `bflow rerun` of the job that run ran: the failed shard
runs again as a new attempt of the same job, no second job appears, the flow run ends Completed.
One server for both cases: a deployed pipeline's run, and a `bflow run` job's flow run.
"""

from __future__ import annotations

import signal
from uuid import UUID

from home_helpers import (
    Lines,
    api_get,
    api_post,
    bflow_in,
    bflow_started_in,
    server_record,
    stop_server_of,
    wait_until,
)

from bacalhau_flow.flow.scheduled import job_id_for

# Shard b.txt fails until the marker file exists; shard a.txt always succeeds.
SPEC = """\
pipeline: {name}
input: {{url: data, glob: "/*"}}
transform:
  cmd: >-
    if [ -f $BFLOW_INPUTS/data/b.txt ] && [ ! -f "$FLAG_FILE" ]; then exit 3; fi;
    cp $BFLOW_INPUTS/data/* $BFLOW_OUTPUTS/
  env: {{FLAG_FILE: "{flag}"}}
"""


def _jobs(pipeline: str) -> list:
    """The jobs of `pipeline` in the job store of $BFLOW_HOME (the test's home), with their shards."""
    from bacalhau_flow.home import jobs_db
    from bacalhau_flow.jobs.store import JobStore

    store = JobStore(jobs_db())
    try:
        return [store.get(j.id) for j in store.list_jobs() if j.pipeline == pipeline]
    finally:
        store.close()


def _flow_run(api: str, run_id) -> dict:
    return api_get(f"{api}/flow_runs/{run_id}")


def _retry_from_ui(api: str, run_id) -> None:
    """What the UI's Retry button does to a failed flow run."""
    api_post(f"{api}/flow_runs/{run_id}/set_state",
             {"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"},
              "force": True})


def _ended(api: str, run_id, state: str):
    def check():
        run = _flow_run(api, run_id)
        return run if run["state_type"] == state else None
    return check


def _attempts(job) -> dict[int, int]:
    """Attempts per shard: shard 0 reads a.txt, shard 1 b.txt."""
    return {s.index: s.attempts for s in job.shards}


def test_retry_from_the_ui_reruns_the_failed_shard_in_the_same_job(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("BFLOW_HOME", str(home))  # for the job store reads in this process
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a\n")
    (tmp_path / "data" / "b.txt").write_text("b\n")
    deployed_flag, run_flag = tmp_path / "deployed.flag", tmp_path / "run.flag"
    spec = tmp_path / "flaky.yaml"
    spec.write_text(SPEC.format(name="flaky", flag=deployed_flag))
    solo = tmp_path / "solo.yaml"
    solo.write_text(SPEC.format(name="solo", flag=run_flag))
    serve = bflow_started_in(home, "serve")
    out = Lines(serve)
    try:
        out.wait_for("serving bflow deployments from", timeout=120)
        api = server_record(home)["api_url"]
        deployed = bflow_in(home, "deploy", spec)
        assert "bflow-flaky/flaky: deployed, no schedule" in deployed.stdout, deployed.stderr
        deployment = api_get(f"{api}/deployments/name/bflow-flaky/flaky")
        wait_until(lambda: api_get(f"{api}/deployments/{deployment['id']}")["status"] == "READY", 30,
                   "the deployment Ready while serve runs")

        # Given a deployed run whose shard b fails (`prefect deployment run`, through the client).
        from prefect.client.orchestration import SyncPrefectClient

        with SyncPrefectClient(api) as client:
            run_id = client.create_flow_run_from_deployment(UUID(deployment["id"])).id
        failed = wait_until(_ended(api, run_id, "FAILED"), 90, "the deployed run Failed")
        [job] = _jobs("flaky")
        assert job.id == job_id_for(run_id) and job.state == "failed", job
        assert _attempts(job) == {0: 1, 1: 1}
        assert "shard" in failed["state"]["message"], failed["state"]

        # When the marker exists and Retry is pressed, serve reruns the failed shard in that job.
        deployed_flag.write_text("")
        _retry_from_ui(api, run_id)
        done = wait_until(_ended(api, run_id, "COMPLETED"), 90, "the retried run Completed")
        assert f"job {job.id}: completed after a rerun (shard 1 attempt 2)" == done["state"]["message"]
        assert done["run_count"] == 2
        [job] = _jobs("flaky")  # the same job, no second one under that id
        assert job.state == "completed" and job.id == job_id_for(run_id)
        assert _attempts(job) == {0: 1, 1: 2}
        out.wait_for(f"run {done['name']} retried from the UI, job {job.id}", timeout=5)

        # A `bflow run` job's flow run (named by its job id) is retried the same way.
        ran = bflow_in(home, "run", solo)
        assert ran.returncode != 0 and "starting Prefect server" not in ran.stderr, ran.stderr
        [job] = _jobs("solo")
        assert job.state == "failed"
        [job_run] = api_post(f"{api}/flow_runs/filter", {"flow_runs": {"name": {"any_": [job.id]}}})
        assert job_run["state_type"] == "FAILED"
        run_flag.write_text("")
        _retry_from_ui(api, job_run["id"])
        done = wait_until(_ended(api, job_run["id"], "COMPLETED"), 90, "the retried job run Completed")
        assert done["state"]["message"] == f"job {job.id}: completed after a rerun (shard 1 attempt 2)"
        [job] = _jobs("solo")
        assert job.state == "completed" and _attempts(job) == {0: 1, 1: 2}
        out.wait_for(f"run {job.id} retried from the UI: rerunning job {job.id}", timeout=5)

        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=40) == 0
    finally:
        print("bflow serve wrote:", *out.lines, sep="\n")  # shown when the test fails
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        stop_server_of(home)
