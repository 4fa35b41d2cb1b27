"""Prefect as a window on bflow (issue 9): what the session's real Prefect server holds of a
job, read back through its REST API: shard logs and state messages, artifacts, parameters and
tags, a file of several pipelines as one parent flow run, and Cancel from the API."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid

import httpx
from cli_helpers import bflow, bflow_process, run_in_thread, wait_for_running_shard, write_spec

DEADLINE = 60  # seconds for what reaches the server asynchronously (task runs, logs)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def api(path: str, body: dict | None = None):
    url = os.environ["PREFECT_API_URL"].rstrip("/") + path
    response = httpx.post(url, json=body or {}, timeout=30) if body is not None else httpx.get(url, timeout=30)
    response.raise_for_status()
    return response.json()


def eventually(read, ok, timeout: float = DEADLINE):
    """`read()` once `ok` holds of it (or the last value read at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def flow_run_named(name: str) -> dict:
    found = eventually(lambda: api("/flow_runs/filter", {"flow_runs": {"name": {"any_": [name]}}}), len)
    assert len(found) == 1, f"flow runs named {name}: {found}"
    return found[0]


def task_runs_of(flow_run_id: str, count: int) -> dict[str, dict]:
    def read():
        return api("/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}})
    runs = eventually(read, lambda rs: len(rs) == count and all((r["state"] or {}).get("type") in FINAL for r in rs))
    return {r["name"]: r for r in runs}


FINAL = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")


def logs_of(task_run_id: str, ok) -> list[dict]:
    return eventually(lambda: api("/logs/filter", {"logs": {"task_run_id": {"any_": [task_run_id]}}}), ok)


def artifacts_of(flow_run_id: str) -> dict[str, dict]:
    found = eventually(lambda: api("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}),
                       lambda a: len(a) >= 2)
    return {a["key"]: a for a in found}


def test_shard_logs_state_messages_artifacts_parameters_and_tags(tmp_path):
    name = unique("window")
    data = tmp_path / "d"
    data.mkdir()
    (data / "a.txt").write_text("a")
    (data / "b.txt").write_text("b")
    spec = write_spec(tmp_path, f"""
pipeline: {name}
input: {{url: d, glob: '/*.txt'}}
retries: 1
transform:
  cmd: [sh, -c, 'if [ -e $BFLOW_INPUTS/d/b.txt ]; then echo "odd number 7: failing on purpose" >&2; exit 1; fi;
                 echo note-on-stderr >&2; echo hello-out; echo x > $BFLOW_OUTPUTS/$BFLOW_SHARD_ID']
""")
    r = bflow("run", spec, "--json")
    assert r.code == 1, r.stderr
    job = r.json()
    good, bad = job["shards"]
    assert good["state"] == "completed" and bad["state"] == "failed"

    flow_run = flow_run_named(job["id"])
    assert flow_run["parameters"] == {"spec": str(spec), "pipeline": name, "network": None}
    assert {"bflow", name} <= set(flow_run["tags"])
    runs = task_runs_of(flow_run["id"], 2)
    # bflow's tags stay on the flow run: on a task run each tag costs a concurrency-limit call
    assert all("bflow" not in run["tags"] for run in runs.values()), runs

    failed = runs["shard-1"]
    assert failed["state"]["type"] == "FAILED" and failed["run_count"] == 2  # retries: 1 still retries
    message = failed["state"]["message"]
    assert message.startswith(f"shard 1 failed on node {bad['node']}: exit code 1")
    assert "stderr: odd number 7: failing on purpose" in message and "Traceback" not in message
    errors = logs_of(failed["id"], lambda logs: any("odd number 7" in g["message"] for g in logs))
    assert any(g["level"] == 40 and "odd number 7: failing on purpose" in g["message"] for g in errors), errors

    done = runs["shard-0"]
    assert done["state"]["type"] == "COMPLETED"
    infos = logs_of(done["id"], lambda logs: any(good["cid"] in g["message"] for g in logs))
    (record,) = [g for g in infos if good["cid"] in g["message"]]
    assert record["level"] == 20
    for part in (good["node"], "/a.txt", "exit code: 0", "note-on-stderr", "hello-out"):
        assert part in record["message"]

    artifacts = artifacts_of(flow_run["id"])
    table = json.loads(artifacts[f"bflow-{name}-shards"]["data"])
    assert [(row["shard"], row["state"]) for row in table] == [(0, "completed"), (1, "failed")]
    assert table[1]["exit code"] == 1 and table[1]["stderr"] == "odd number 7: failing on purpose"
    assert table[0]["output CID"] == good["cid"] and table[0]["attempts"] == 1 and table[1]["attempts"] == 2
    summary = artifacts[f"bflow-{name}"]
    assert summary["type"] == "markdown" and job["id"] in summary["data"]
    assert f"bflow get {job['id']} -o DIR" in summary["data"] and "/ipfs/" not in summary["data"]

    again = bflow("run", spec, "--json")  # shard 0 is reused: its row says skipped
    rerun = flow_run_named(again.json()["id"])
    rows = json.loads(artifacts_of(rerun["id"])[f"bflow-{name}-shards"]["data"])
    assert [row["state"] for row in rows] == ["skipped", "failed"]


def test_an_artifact_the_api_refuses_leaves_the_other_and_the_job(tmp_path, monkeypatch):
    from prefect.client.orchestration import PrefectClient

    create_artifact = PrefectClient.create_artifact

    async def refusing_tables(client, artifact):  # the real call, but for the table
        if artifact.type == "table":
            raise RuntimeError("refused on purpose")
        return await create_artifact(client, artifact=artifact)

    monkeypatch.setattr(PrefectClient, "create_artifact", refusing_tables)
    name = unique("refused")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a")
    r = bflow("run", write_spec(tmp_path, f"pipeline: {name}\ninput: {{url: d}}\ntransform: {{cmd: ['true']}}\n"), "--json")
    assert r.code == 0, r.stderr
    flow_run = flow_run_named(r.json()["id"])
    assert flow_run["state_type"] == "COMPLETED"
    found = eventually(lambda: api("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}}), len)
    assert [a["key"] for a in found] == [f"bflow-{name}"]
    warned = eventually(lambda: api("/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run["id"]]}}}),
                        lambda logs: any("refused on purpose" in g["message"] for g in logs))
    assert any(g["level"] == 30 and "could not create the artifacts" in g["message"] for g in warned), warned


def two_shards_one_failing(tmp_path, name: str, stderr: str = "odd number 7: failing on purpose"):
    data = tmp_path / "d"
    data.mkdir(exist_ok=True)
    (data / "a.txt").write_text("a")
    (data / "b.txt").write_text("b")
    return write_spec(tmp_path, f"""
pipeline: {name}
input: {{url: d, glob: '/*.txt'}}
transform:
  cmd: [sh, -c, 'if [ -e $BFLOW_INPUTS/d/b.txt ]; then echo "{stderr}" >&2; exit 1; fi; echo x > $BFLOW_OUTPUTS/$BFLOW_SHARD_ID']
""")


def task_run_records(spec) -> tuple[dict, dict[str, list[dict]]]:
    """Run `spec` (in this process); its job and the log records of each shard's task run, read
    once it returned, its runner's loop has sent the batches in flight, and Prefect's log worker,
    which the runner handed its last records to, is drained (as the process's exit waits for both)."""
    from prefect.logging.handlers import APILogWorker

    from bacalhau_flow.flow import task_runner

    job = bflow("run", spec, "--json").json()
    task_runner._wait_for_lingering()
    APILogWorker.drain_all(timeout=30)
    runs = task_runs_of(flow_run_named(job["id"])["id"], len(job["shards"]))
    return job, {name: api("/logs/filter", {"logs": {"task_run_id": {"any_": [run["id"]]}}})
                 for name, run in runs.items()}


def shard_records(spec) -> tuple[dict, dict[str, list[dict]]]:
    """As task_run_records, bflow's own records only (one per attempt)."""
    job, records = task_run_records(spec)
    return job, {name: [g for g in found if g["message"].startswith("shard ")] for name, found in records.items()}


def test_shard_records_follow_prefects_logging_level_and_switch(tmp_path):
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    (api_handler,) = [h for h in logging.getLogger("prefect.task_runs").handlers if isinstance(h, APILogHandler)]
    before = api_handler.level
    api_handler.setLevel(logging.WARNING)  # as `handlers: {api: {level: WARNING}}` in a logging.yml
    try:
        job, records = shard_records(two_shards_one_failing(tmp_path, unique("warning")))
    finally:
        api_handler.setLevel(before)
    assert [s["state"] for s in job["shards"]] == ["completed", "failed"]
    assert records["shard-0"] == []  # its INFO record is below the handler's level
    (error,) = records["shard-1"]
    assert error["level"] == 40 and "odd number 7: failing on purpose" in error["message"]

    with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: False}):
        job, records = shard_records(two_shards_one_failing(tmp_path, unique("off")))
    assert job["shards"][1]["state"] == "failed"
    assert records == {"shard-0": [], "shard-1": []}


def test_shard_records_are_sent_in_batches_of_prefects_size_each_once_and_bounded(tmp_path, monkeypatch):
    from prefect.client.orchestration import PrefectClient
    from prefect.settings import (PREFECT_LOGGING_TO_API_BATCH_SIZE, PREFECT_LOGGING_TO_API_MAX_LOG_SIZE,
                                  temporary_settings)

    batches, handed = [], []
    create_logs = PrefectClient.create_logs

    async def counted(client, logs):  # the real call, counted where the shard tasks run
        if threading.current_thread().name == "bflow-network":
            batches.append(len(logs))
        else:  # Prefect's log worker: the records still queued when the runner closed
            handed.extend(log for log in logs if log.get("task_run_id"))
        await create_logs(client, logs)

    monkeypatch.setattr(PrefectClient, "create_logs", counted)
    name = unique("batched")
    data = tmp_path / "d"
    data.mkdir()
    for i in range(12):
        (data / f"{i:02}.txt").write_text(str(i))
    spec = write_spec(tmp_path, f"""
pipeline: {name}
input: {{url: d, glob: '/*.txt'}}
transform: {{cmd: [sh, -c, 'printf "%03000d" 0 >&2; echo x > $BFLOW_OUTPUTS/$BFLOW_SHARD_ID']}}
""")
    # bflow's record of a shard is cut to ~1 kB: a batch of 2 kB holds two or three records
    with temporary_settings(updates={PREFECT_LOGGING_TO_API_MAX_LOG_SIZE: 1000, PREFECT_LOGGING_TO_API_BATCH_SIZE: 2000}):
        job, records = task_run_records(spec)
    assert len(records) == 12
    for shard, found in records.items():  # bflow's record and Prefect's own, each once
        ours, prefects = ([g for g in found if g["message"].startswith(start)]
                          for start in (f"shard {shard.split('-')[1]} completed on node ", "Finished in state Completed"))
        assert len(ours) == 1 and len(prefects) == 1 and len(found) == 2, found
        assert ours[0]["message"].endswith("... [truncated]") and len(ours[0]["message"].encode()) <= 1000
    # a batch is sent once it holds 2 kB: at most one batch's worth is left to Prefect's worker
    assert sum(batches) + len(handed) == 24 and len(handed) <= 4, (batches, handed)
    assert len(batches) >= 5 and max(batches) <= 4, batches


SLOW_LOGS_THEN_EXIT = """
import asyncio, sys, threading
from prefect.client.orchestration import PrefectClient
real = PrefectClient.create_logs

async def slow(client, logs):  # the runner's batches are still in flight when the job ends
    if threading.current_thread().name == "bflow-network":
        await asyncio.sleep(1.5)
    await real(client, logs)

PrefectClient.create_logs = slow
from bacalhau_flow import run
print(run(sys.argv[1]).id, flush=True)
"""


def test_record_batches_in_flight_when_a_job_ends_reach_the_server_before_the_process_exits(tmp_path):
    import subprocess
    import sys

    name = unique("in-flight")
    data = tmp_path / "d"
    data.mkdir()
    for i in range(3):
        (data / f"{i}.txt").write_text(str(i))
    spec = write_spec(tmp_path, f"pipeline: {name}\ninput: {{url: d, glob: '/*.txt'}}\ntransform: {{cmd: ['true']}}\n")
    # records cut to 300 bytes, a batch sent at 300: every one or two records, all in flight (or the
    # last one queued) when the runner closes
    env = dict(os.environ, PREFECT_LOGGING_TO_API_MAX_LOG_SIZE="300", PREFECT_LOGGING_TO_API_BATCH_SIZE="300")
    done = subprocess.run([sys.executable, "-c", SLOW_LOGS_THEN_EXIT, str(spec)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    runs = task_runs_of(flow_run_named(done.stdout.strip())["id"], 3)
    for run in runs.values():  # read once: the process ended, nothing more is on its way
        messages = [r["message"] for r in api("/logs/filter", {"logs": {"task_run_id": {"any_": [run["id"]]}}})]
        assert any(m.startswith(f"shard {run['name'].split('-')[1]} completed on node ") for m in messages), messages


def test_a_file_of_two_pipelines_is_one_parent_flow_run(tmp_path):
    first, second = unique("first"), unique("second")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a\n")
    spec = write_spec(tmp_path, f"""
pipeline: {first}
input: {{url: d}}
transform: {{cmd: [sh, -c, 'cp $BFLOW_INPUTS/d/a.txt $BFLOW_OUTPUTS/']}}
---
pipeline: {second}
input: {{url: 'pipeline://{first}'}}
transform: {{cmd: [sh, -c, 'cat $BFLOW_INPUTS/{first}/a.txt']}}
""", name="two.yaml")
    r = bflow("run", spec, "--json")
    assert r.code == 0, r.stderr
    jobs = r.json()["jobs"]
    children = [flow_run_named(j["id"]) for j in jobs]
    parents = set()
    for child in children:
        assert child["parent_task_run_id"], child
        parents.add(api(f"/task_runs/{child['parent_task_run_id']}")["flow_run_id"])
    assert len(parents) == 1
    parent = api(f"/flow_runs/{parents.pop()}")
    assert parent["name"] == f"two-{jobs[0]['id'][:10]}" and "bflow" in parent["tags"]
    assert parent["parent_task_run_id"] is None and parent["state_type"] == "COMPLETED"
    assert parent["parameters"]["pipelines"] == [first, second]
    assert children[0]["start_time"] < children[1]["start_time"]  # in the order they ran


def test_cancel_in_prefect_cancels_the_job(tmp_path):
    name = unique("cancelled")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("a")
    spec = write_spec(tmp_path, f"pipeline: {name}\ninput: {{url: d, glob: '/*'}}\n"
                                "transform: {cmd: [sleep, '60']}\n")
    thread, holder = run_in_thread("run", spec, "--json")
    job, _shard = wait_for_running_shard(name)
    flow_run = flow_run_named(job.id)
    asked = time.monotonic()
    api(f"/flow_runs/{flow_run['id']}/set_state", {"state": {"type": "CANCELLING", "name": "Cancelling"},
                                                    "force": True})
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert time.monotonic() - asked < 10
    outcome = holder["r"]
    assert outcome.code == 1
    record = outcome.json()
    assert record["state"] == "cancelled" and record["shards"][0]["state"] == "cancelled"
    ended = eventually(lambda: api(f"/flow_runs/{flow_run['id']}"), lambda f: f["state_type"] == "CANCELLED", 20)
    assert ended["state_type"] == "CANCELLED"
    shard_run = task_runs_of(flow_run["id"], 1)["shard-0"]
    assert shard_run["state"]["type"] == "CANCELLED"


def test_ctrl_c_of_two_pipelines_in_threads_stops_both_and_ends_their_flow_runs_cancelled(tmp_path):
    left, right = unique("left"), unique("right")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a\n")
    spec = write_spec(tmp_path, "".join(f"---\npipeline: {name}\ninput: {{url: d}}\ntransform: {{cmd: [sleep, '60']}}\n"
                                        for name in (left, right)), name="both.yaml")
    process = bflow_process("run", spec)
    try:
        jobs = [wait_for_running_shard(name)[0] for name in (left, right)]
        process.send_signal(signal.SIGINT)
        asked = time.monotonic()
        _out, err = process.communicate(timeout=45)
    finally:
        process.kill()
    assert process.returncode == 130, err.decode()
    assert time.monotonic() - asked < 20  # the sleeps were killed, not waited for
    for job in jobs:
        ended = eventually(lambda job=job: flow_run_named(job.id), lambda f: f["state_type"] == "CANCELLED", 20)
        assert ended["state_type"] == "CANCELLED"
        holder = api(f"/task_runs/{ended['parent_task_run_id']}")
        parent = api(f"/flow_runs/{holder['flow_run_id']}")
        assert parent["state_type"] == "CANCELLED"
