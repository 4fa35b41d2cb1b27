"""The owner of a running job and the `interrupted` state (jobs/owner.py, jobs/store.py)."""

import subprocess
import sys
import time

import pytest

from bacalhau_flow.errors import BflowError
from bacalhau_flow.jobs import owner as owner_mod
from bacalhau_flow.jobs.owner import Owner, owner_gone, process_started
from bacalhau_flow.jobs.store import JobStore


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.sqlite")
    yield s
    s.close()


def a_dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_new_job_is_owned_by_this_process_with_a_heartbeat(store):
    job = store.create_job("p", [(0, "a", [])])
    me = Owner.me()
    assert (job.owner_host, job.pid, job.owner_started) == (me.host, me.pid, me.started)
    assert job.heartbeat is not None and time.time() - job.heartbeat < 5
    assert job.state == "queued"  # its own owner never reads it interrupted
    assert job.to_json()["owner"]["pid"] == me.pid


def test_a_running_job_whose_process_died_reads_interrupted_in_list_and_get(store):
    job = store.create_job("p", [(0, "a", []), (1, "b", [])])
    store.set_job(job.id, state="running", pid=a_dead_pid())
    assert store.get(job.id).state == "interrupted"
    assert [j.state for j in store.list_jobs()] == ["interrupted"]
    assert [j.id for j in store.list_jobs(state="interrupted")] == [job.id]
    assert store.list_jobs(state="running") == []


def test_a_pid_given_to_a_later_process_is_not_the_owner(store):
    job = store.create_job("p", [(0, "a", [])])
    store.set_job(job.id, state="running", owner_started="1")  # this pid, but another process's start time
    assert store.get(job.id).state == "interrupted"


def test_a_heartbeat_older_than_the_limit_reads_interrupted_on_any_host(store):
    job = store.create_job("p", [(0, "a", [])])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        store.set_job(job.id, state="running", pid=child.pid, owner_started=process_started(child.pid),
                      heartbeat=time.time())
        assert store.get(job.id).state == "running"  # alive, beating
        store.set_job(job.id, owner_host="another-host", heartbeat=time.time() - owner_mod.STALE_SECONDS - 1)
        assert store.get(job.id).state == "interrupted"
        store.set_job(job.id, heartbeat=time.time())
        assert store.get(job.id).state == "running"  # another host that beats: trusted
    finally:
        child.kill()
        child.wait()


def test_ended_jobs_keep_their_state_whatever_their_owner(store):
    job = store.create_job("p", [(0, "a", [])])
    store.set_job(job.id, state="completed", pid=a_dead_pid())
    assert store.get(job.id).state == "completed"


def test_claim_takes_an_interrupted_job_and_refuses_one_whose_owner_is_alive(store):
    job = store.create_job("p", [(0, "a", [])])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        store.set_job(job.id, state="running", pid=child.pid, owner_started=process_started(child.pid))
        with pytest.raises(BflowError, match=f"driven by pid {child.pid}"):
            store.claim(job.id)
    finally:
        child.kill()
        child.wait()
    claimed = store.claim(job.id)  # its owner is gone now
    assert claimed.pid == Owner.me().pid and claimed.state == "running"


def test_the_heartbeat_thread_renews_this_processs_running_jobs(store, monkeypatch):
    monkeypatch.setattr(owner_mod, "HEARTBEAT_SECONDS", 0.1)
    monkeypatch.setattr(owner_mod, "_beating", {})
    job = store.create_job("p", [(0, "a", [])])
    store.set_job(job.id, state="running", heartbeat=1.0)
    deadline = time.monotonic() + 10
    while store.get(job.id).heartbeat == 1.0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert time.time() - store.get(job.id).heartbeat < 5


def test_owner_gone_rules():
    now = 10_000.0
    here = Owner(owner_mod.this_host(), a_dead_pid(), None)
    assert owner_gone(here, now, created=now, now=now)  # dead pid on this host
    elsewhere = Owner("another-host", 1, None)
    assert not owner_gone(elsewhere, now - 1, created=now, now=now)
    assert owner_gone(elsewhere, now - owner_mod.STALE_SECONDS - 1, created=now, now=now)
    legacy = Owner(None, None, None)  # recorded before owners were: judged by its age
    assert not owner_gone(legacy, None, created=now - 1, now=now)
    assert owner_gone(legacy, None, created=now - owner_mod.STALE_SECONDS - 1, now=now)
