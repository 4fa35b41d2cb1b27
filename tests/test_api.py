"""The Python API (`from bacalhau_flow import run, load, JobFailed`), also from inside a
user's own Prefect flow: the pipeline's flow run is a subflow of it, and a job that did not
complete fails the user's flow."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from prefect import flow

from bacalhau_flow import JobFailed, load, run

CAT = "cat $BFLOW_INPUTS/d/* > $BFLOW_OUTPUTS/out.txt"


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "d"
    data.mkdir(exist_ok=True)
    (data / "a.txt").write_text("alpha\n")
    (data / "b.txt").write_text("beta\n")
    return data


def _spec(tmp_path: Path, name: str, cmd: str = CAT) -> str:
    """YAML text of one pipeline over tmp_path/d (the session shares $BFLOW_HOME: a new name
    each time, so no earlier result is reused)."""
    return (f"pipeline: {name}-{uuid.uuid4().hex[:8]}\ninput: {{url: {_data(tmp_path)}}}\n"
            f"transform: {{cmd: [sh, -c, '{cmd}']}}\n")


def _flow_run_named(name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
        parent = client.read_task_run(flow_run.parent_task_run_id) if flow_run.parent_task_run_id else None
    return flow_run, parent


def _task_runs_of(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 30  # task runs reach the API as events: a moment later
    with get_client(sync_client=True) as client:
        while True:
            found = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def test_importing_the_package_imports_no_prefect():
    code = "import sys, bacalhau_flow; assert 'prefect' not in sys.modules; print(bacalhau_flow.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_load_takes_a_path_or_yaml_text(tmp_path):
    text = _spec(tmp_path, "loaded")
    (tmp_path / "spec.yaml").write_text(text)
    assert [p.name for p in load(tmp_path / "spec.yaml")] == [p.name for p in load(text)]
    assert load(str(tmp_path / "spec.yaml"))[0].source_file == str(tmp_path / "spec.yaml")


def test_run_inside_a_user_flow_is_a_subflow_and_returns_the_completed_job(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec(tmp_path, "api"))

    @flow
    def mine():
        from prefect import tags
        from prefect.runtime import flow_run

        with tags("team-a"):  # the caller's tags reach the shards' task runs, bflow's own do not
            return run(spec), flow_run.id

    job, my_flow_run_id = mine()
    assert job.state == "completed" and job.cid and [s.state for s in job.shards] == ["completed"]
    flow_run, parent = _flow_run_named(job.id)
    assert flow_run.parent_task_run_id is not None  # a subflow ...
    assert str(parent.flow_run_id) == str(my_flow_run_id)  # ... of the user's flow
    assert flow_run.state.is_completed()
    assert {"team-a", "bflow"} <= set(flow_run.tags)
    (shard,) = _task_runs_of(flow_run.id)
    assert set(shard.tags) == {"team-a"}, shard.tags


def test_a_failed_job_raises_job_failed_and_fails_the_user_flow(tmp_path):
    up = f"up-{uuid.uuid4().hex[:8]}"
    text = (f"pipeline: {up}\ninput: {{url: {_data(tmp_path)}}}\ntransform: {{cmd: [sh, -c, 'exit 3']}}\n"
            f"---\npipeline: down-{uuid.uuid4().hex[:8]}\ninput: {{url: 'pipeline://{up}'}}\n"
            f"transform: {{cmd: ['true']}}\n")
    caught = {}

    @flow
    def mine():
        try:
            run(text)
        except JobFailed as e:
            caught["error"] = e
            raise

    state = mine(return_state=True)
    assert state.is_failed()
    error = caught["error"]
    assert error.job.pipeline == up and error.job.state == "failed"
    assert str(error).startswith(f"job {error.job.id} ({up}) failed: ")
    assert [j.state for j in error.jobs] == ["failed", "cancelled"]  # the downstream did not run


def test_raise_on_failure_false_returns_the_failed_job(tmp_path):
    (pipeline,) = load(_spec(tmp_path, "fails", cmd="echo no >&2; exit 3"))
    job = run(pipeline, raise_on_failure=False)
    assert job.state == "failed" and job.shards[0].exit_code == 3


def test_an_ended_job_leaves_nothing_of_it_in_memory(tmp_path):
    """Prefect keeps copies of the contexts a flow run ran in (for the process's lifetime, or a
    minute): what a job's flow reaches through them must not be its shards (a long-lived
    process, `bflow serve` or a user's own, would keep every job it ran)."""
    import gc

    from bacalhau_flow.flow.job_run import JobRun
    from bacalhau_flow.plan.datum import Shard

    (pipeline,) = load(_spec(tmp_path, "forgotten"))
    job = run(pipeline)
    assert job.state == "completed"
    gc.collect()
    alive = gc.get_objects()
    assert [o for o in alive if isinstance(o, JobRun) and o.job.id == job.id] == []
    assert [o for o in alive if isinstance(o, Shard) and o.pipeline == pipeline.name] == []


def test_a_bad_spec_raises_spec_error():
    from bacalhau_flow.errors import SpecError

    with pytest.raises(SpecError, match="globb"):
        run("pipeline: bad\ninput: {url: d, globb: '/*'}\ntransform: {cmd: ['true']}\n")


@pytest.mark.parametrize("pipelines", [1, 2])
def test_a_ctrl_c_that_another_thread_takes_stops_the_run_at_once(tmp_path, pipelines):
    """The kernel may hand a process's SIGINT to any of its threads, and Python runs the handler
    in the main thread only once that thread runs again. Here the SIGINT goes to a thread of
    the test's own while the main thread waits: in the event loop of one pipeline's flow, or
    for the threads of a file's two pipelines. It must be handled within a moment, not when a
    shard ends by itself (30 s later)."""
    import signal
    import threading

    from cli_helpers import wait_for_running_shard

    from bacalhau_flow.errors import JobCancelled

    names = [f"ctrl-c-{uuid.uuid4().hex[:8]}" for _ in range(pipelines)]
    _data(tmp_path)
    spec = "".join(f"---\npipeline: {name}\ninput: {{url: {tmp_path / 'd'}}}\ntransform: {{cmd: [sleep, '30']}}\n"
                   for name in names)
    asked: list[float] = []

    def ctrl_c_here() -> None:
        for name in names:
            wait_for_running_shard(name)
        asked.append(time.monotonic())
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # taken by this thread, not the main one

    threading.Thread(target=ctrl_c_here, daemon=True).start()
    with pytest.raises(JobCancelled, match="cancelled by the user"):
        run(spec)
    assert asked, "the run ended before its shards were seen running"
    took = time.monotonic() - asked[0]
    assert took < 10, f"stopped {took:.1f} s after Ctrl-C"
