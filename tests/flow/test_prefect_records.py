"""Prefect sees one flow run per job and one task run per shard, named by its index."""

import time

from cli_helpers import bflow, write_spec


def test_one_flow_run_per_job_and_one_task_run_per_shard(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    for i in range(4):
        (data / f"f{i}").write_text(str(i))
    spec = write_spec(tmp_path, "pipeline: recorded\ninput: {url: d, glob: '/*'}\nretries: 1\n"
                                "transform: {cmd: [sh, -c, 'test $BFLOW_SHARD_INDEX != 3']}\n")
    job = bflow("run", spec, "--json").json()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, TaskRunFilter, TaskRunFilterFlowRunId

    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[job["id"]])))
        assert flow_run.state.is_failed()  # shard 3 fails on purpose
        deadline = time.monotonic() + 60  # task runs reach the server through its event stream
        while True:
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run.id])))
            if (len(runs) == 4 and all(r.state and r.state.is_final() for r in runs)) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    by_name = {r.name: r for r in runs}
    assert sorted(by_name) == ["shard-0", "shard-1", "shard-2", "shard-3"]
    assert by_name["shard-3"].state.is_failed() and by_name["shard-3"].run_count == 2  # 1 retry
    assert all(by_name[f"shard-{i}"].state.is_completed() for i in range(3))
