"""Issue 12, the requester's lifecycle, run as a user would through the CLI: Ctrl-C stops a
job and exits 130 within 3 s (a second Ctrl-C at once), a `bflow run` killed midway leaves
its job `interrupted`, `bflow resume` completes it with each shard run once, and nodes stop
the shards of a requester they no longer hear from. On the embedded network and on NATS (a
real nats-server, the nodes in this process, `bflow run` a process of its own)."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from cli_helpers import bflow, bflow_process, wait_for_running_shard, write_spec

from bacalhau_flow.home import jobs_db
from bacalhau_flow.jobs.owner import process_started
from bacalhau_flow.jobs.store import JobStore
from bacalhau_flow.testing.requires import import_or_skip

CTRL_C_BOUND = 3.0  # seconds from Ctrl-C to the process's exit, as the issue asks
SILENT = 6.0  # the nodes' silence limit in these tests (network/liveness.py; 20 s by default)


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory):
    """A nats-server and two compute nodes (in this process) that stop the shards of a requester
    silent for SILENT s."""
    server_mod = import_or_skip("bacalhau_flow_nats.server", "the NATS plugin (plugins/bacalhau-flow-nats)",
                                "bash scripts/setup.sh installs it")
    from bacalhau_flow.network import liveness
    from bacalhau_flow.network.devstack import Devstack

    before, liveness.SILENT_SECONDS = liveness.SILENT_SECONDS, SILENT
    server = server_mod.NatsServer().start()
    try:
        with Devstack(server.url, nodes=2, root=tmp_path_factory.mktemp("nodes")):
            yield server.url
    finally:
        server.stop()
        liveness.SILENT_SECONDS = before


@pytest.fixture(params=["embedded", "nats"])
def network(request) -> list[str]:
    """The `--network` arguments of the network under test."""
    return [] if request.param == "embedded" else ["--network", request.getfixturevalue("nats_url")]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def data(tmp_path: Path, count: int) -> Path:
    d = tmp_path / "d"
    d.mkdir(exist_ok=True)
    for i in range(count):
        (d / f"f{i}").write_text(f"{i}\n")
    return d


def sleeping_spec(tmp_path: Path, name: str, count: int, token: str, script: str = "sleep 60") -> Path:
    data(tmp_path, count)
    return write_spec(tmp_path, f"pipeline: {name}\ninput: {{url: d, glob: '/*'}}\n"
                                f"transform: {{cmd: [sh, -c, '{script} # {token}']}}\n", name=f"{name}.yaml")


def processes_with(token: str) -> list[int]:
    """Pids of the processes whose command line holds `token` (the shards' commands)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if token.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def eventually(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def job_json(job_id: str) -> dict:
    return bflow("describe", job_id, "--json").json()


# -- Ctrl-C ---------------------------------------------------------------------------------

def test_ctrl_c_stops_the_job_and_exits_130_within_3_seconds(tmp_path, network):
    name, token = unique("ctrlc"), uuid.uuid4().hex
    spec = sleeping_spec(tmp_path, name, 4, token)
    proc = bflow_process("run", spec, *network, start_new_session=True)
    try:
        job, _ = wait_for_running_shard(name)
        os.kill(proc.pid, signal.SIGINT)
        asked = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - asked
    finally:
        proc.kill()
    err = stderr.decode()
    assert proc.returncode == 130, err
    assert took < CTRL_C_BOUND, f"exited {took:.2f} s after Ctrl-C"
    record = JobStore(jobs_db()).get(job.id)
    assert record.state == "cancelled" and record.error == "cancelled by the user"
    assert {s.state for s in record.shards} == {"cancelled"}
    assert "Traceback" not in err and "EventsWorker" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: job {job.id} cancelled by the user; `bflow describe {job.id[:10]}` shows what ran"]
    assert eventually(lambda: not processes_with(token), 5), "a shard's command outlived the Ctrl-C"


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    """The shards ignore SIGTERM, so the first Ctrl-C's stop waits a grace before it kills them;
    the second one does not wait for that."""
    name, token = unique("twice"), uuid.uuid4().hex
    spec = sleeping_spec(tmp_path, name, 3, token, script='trap "" TERM; sleep 60')
    proc = bflow_process("run", spec, start_new_session=True)
    try:
        job, _ = wait_for_running_shard(name)
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGINT)
        second = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - second
    finally:
        proc.kill()
    err = stderr.decode()
    assert proc.returncode == 130, err
    assert took < 1.0, f"exited {took:.2f} s after the second Ctrl-C"
    assert "Traceback" not in err
    record = JobStore(jobs_db()).get(job.id)
    assert record.state == "cancelled" and {s.state for s in record.shards} == {"cancelled"}
    assert eventually(lambda: not processes_with(token), 5), "a shard's command outlived the second Ctrl-C"


def test_ctrl_c_of_a_file_of_several_pipelines_stops_them_all_within_3_seconds(tmp_path):
    left, right, after, token = unique("left"), unique("right"), unique("after"), uuid.uuid4().hex
    data(tmp_path, 2)
    body = "".join(f"---\npipeline: {n}\ninput: {{url: d, glob: '/*'}}\ntransform: {{cmd: [sh, -c, 'sleep 60 # {token}']}}\n"
                   for n in (left, right))
    body += f"---\npipeline: {after}\ninput: {{url: 'pipeline://{left}'}}\ntransform: {{cmd: [cat]}}\n"
    spec = write_spec(tmp_path, body, name="several.yaml")
    proc = bflow_process("run", spec, start_new_session=True)
    try:
        jobs = [wait_for_running_shard(n)[0] for n in (left, right)]
        os.kill(proc.pid, signal.SIGINT)
        asked = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - asked
    finally:
        proc.kill()
    err = stderr.decode()
    assert proc.returncode == 130, err
    assert took < CTRL_C_BOUND, f"exited {took:.2f} s after Ctrl-C"
    assert "Traceback" not in err and "EventsWorker" not in err
    store = JobStore(jobs_db())
    for job in jobs:
        assert store.get(job.id).state == "cancelled"
    assert not [j for j in store.list_jobs(200) if j.pipeline == after]  # never started
    assert eventually(lambda: not processes_with(token), 5)


# -- a requester that dies -----------------------------------------------------------------

def test_a_killed_run_reads_interrupted_and_resume_completes_it_running_each_shard_once(tmp_path, network):
    """9 shards of 4 s each; `bflow run` is SIGKILLed just after the first ones completed, while
    others run. Each shard appends its index to `runs` when its command completes."""
    name, runs = unique("resume"), tmp_path / "runs"
    data(tmp_path, 9)
    spec = write_spec(tmp_path, f"pipeline: {name}\ninput: {{url: d, glob: '/*'}}\nresources: {{cpu: 1}}\n"
                                f"transform: {{cmd: [sh, -c, 'sleep 4; echo $BFLOW_SHARD_INDEX >> {runs}; "
                                f"cp $BFLOW_INPUTS/d/* $BFLOW_OUTPUTS/']}}\n", name="resume.yaml")
    proc = bflow_process("run", spec, *network, start_new_session=True)
    try:
        assert eventually(lambda: runs.exists(), 90), proc.stderr.read1().decode() if proc.poll() else "no shard ran"
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    listed = {j["id"]: j for j in bflow("list", "--json").json() if j["pipeline"] == name}
    [job] = listed.values()
    assert job["state"] == "interrupted", job
    assert 0 < job["completed"] < 9
    described = job_json(job["id"])
    assert described["state"] == "interrupted" and described["owner"]["pid"] == proc.pid
    assert "bflow resume" in bflow("describe", job["id"]).stdout

    resumed = bflow("resume", job["id"][:12], "--json")
    assert resumed.code == 0, resumed.stderr
    after = resumed.json()
    assert after["state"] == "completed"
    ran = runs.read_text().split()
    assert sorted(ran, key=int) == [str(i) for i in range(9)], f"shards run more than once: {ran}"
    got = tmp_path / "got"
    assert bflow("get", job["id"], "-o", got).code == 0
    assert sorted(p.name for p in (got / "outputs").iterdir()) == sorted(f"f{i}" for i in range(9))
    done_before = [s["index"] for s in described["shards"] if s["state"] == "completed"]
    assert all(after["shards"][i]["attempts"] == 1 for i in done_before)  # kept, not run again
    if network:  # the attempts running on nodes were taken over there (a result taken, not rerun)
        taken = int(resumed.stderr.split(" taken over")[0].rsplit(" ", 1)[-1])
        running_before = [s["index"] for s in described["shards"] if s["state"] == "running"]
        assert 0 < taken <= len(running_before), resumed.stderr
    assert bflow("resume", job["id"]).code == 1  # and now it has ended


def test_the_embedded_networks_commands_end_with_a_killed_run(tmp_path):
    """Its nodes live in the `bflow run` process: SIGKILLed, nothing is left running its shards."""
    name, token = unique("killed"), uuid.uuid4().hex
    spec = sleeping_spec(tmp_path, name, 2, token)
    proc = bflow_process("run", spec, start_new_session=True)
    try:
        wait_for_running_shard(name)
        assert eventually(lambda: len(processes_with(token)) == 2, 20), "the shards' commands did not start"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert eventually(lambda: not processes_with(token), 5), "the shards ran on after their run was killed"


def test_resume_refuses_a_finished_job_and_one_whose_owner_is_alive(tmp_path):
    name = unique("done")
    data(tmp_path, 1)
    spec = write_spec(tmp_path, f"pipeline: {name}\ninput: {{url: d}}\ntransform: {{cmd: ['true']}}\n")
    ran = bflow("run", spec, "--json")
    assert ran.code == 0, ran.stderr
    finished = bflow("resume", ran.json()["id"])
    assert finished.code == 1 and "already ended (completed): nothing to resume" in finished.stderr
    assert "bflow rerun" in finished.stderr and "Traceback" not in finished.stderr

    store = JobStore(jobs_db())
    job = store.create_job(name, [(0, "s", [])], spec_file=str(spec))
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store.set_job(job.id, state="running", pid=owner.pid, owner_started=process_started(owner.pid))
        alive = bflow("resume", job.id)
        assert alive.code == 1 and f"is still driven by pid {owner.pid}" in alive.stderr, alive.stderr
        assert "bflow cancel" in alive.stderr
    finally:
        owner.kill()
        owner.wait()
    assert bflow("list", "--json", "--state", "interrupted").json()[0]["id"] == job.id
    assert bflow("cancel", job.id).code == 0  # an interrupted job can be cancelled
    assert store.get(job.id).state == "cancelled"


def test_nodes_stop_the_shards_of_a_requester_they_no_longer_hear_from(tmp_path, nats_url):
    name, token = unique("orphaned"), uuid.uuid4().hex
    spec = sleeping_spec(tmp_path, name, 2, token)
    proc = bflow_process("run", spec, "--network", nats_url, start_new_session=True)
    try:
        job, _ = wait_for_running_shard(name)
        assert eventually(lambda: processes_with(token), 10)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
    finally:
        proc.kill()
    assert JobStore(jobs_db()).get(job.id).state == "interrupted"
    assert processes_with(token), "the shards must not stop before the silence limit"
    assert eventually(lambda: not processes_with(token), SILENT + 10), "the nodes did not stop the shards"
    assert time.monotonic() - killed >= SILENT - 1
    assert job_json(job.id)["state"] == "interrupted"
