"""The job store: the record of truth for jobs, shards and attempts."""

import pytest

from bacalhau_flow.errors import JobNotFound
from bacalhau_flow.jobs.store import JobStore


@pytest.fixture
def store(tmp_path):
    return JobStore(tmp_path / "jobs.sqlite")


def test_a_job_starts_queued_with_its_shards(store):
    job = store.create_job("p", [(0, "sh-a", [{"in": ["/a"]}]), (1, "sh-b", [{"in": ["/b"]}])])
    assert job.state == "queued" and [s.state for s in job.shards] == ["queued", "queued"]
    assert job.shards[1].datums == [{"in": ["/b"]}]


def test_attempts_are_numbered_and_the_last_one_is_the_shards_state(store):
    job = store.create_job("p", [(0, "sh-a", [])])
    a1 = store.start_attempt(job.id, 0, "n1")
    store.finish_attempt(job.id, 0, a1, state="failed", node="n1", exit_code=2, cid=None, stdout_cid="s1",
                         stderr_cid="e1", error="exit code 2", final=False)
    assert store.get(job.id).shards[0].state == "queued"
    a2 = store.start_attempt(job.id, 0, "n2")
    store.finish_attempt(job.id, 0, a2, state="completed", node="n2", exit_code=0, cid="c", stdout_cid="s2",
                         stderr_cid="e2", error=None)
    shard = store.get(job.id).shards[0]
    assert (a1, a2) == (1, 2)
    assert (shard.state, shard.node, shard.attempts, shard.exit_code, shard.cid) == ("completed", "n2", 2, 0, "c")
    assert [(a["node"], a["exit_code"]) for a in store.attempts(job.id, 0)] == [("n1", 2), ("n2", 0)]


def test_cancel_marks_only_unfinished_shards(store):
    job = store.create_job("p", [(0, "a", []), (1, "b", []), (2, "c", [])])
    a = store.start_attempt(job.id, 0)
    store.finish_attempt(job.id, 0, a, state="completed", node="n", exit_code=0, cid="c", stdout_cid=None,
                         stderr_cid=None, error=None)
    store.start_attempt(job.id, 1)
    store.cancel_unfinished_shards(job.id)
    assert [s.state for s in store.get(job.id).shards] == ["completed", "cancelled", "cancelled"]
    assert store.attempts(job.id, 1)[0]["state"] == "cancelled"


def test_job_ids_resolve_by_unique_prefix(store):
    a = store.create_job("p", [], job_id="j-aaa1")
    store.create_job("p", [], job_id="j-aaa2")
    assert store.get("j-aaa1").id == a.id
    with pytest.raises(JobNotFound, match="several"):
        store.get("j-aaa")
    with pytest.raises(JobNotFound, match="no job"):
        store.get("j-zzz")


def test_terminal_states_record_when_the_job_ended(store):
    job = store.create_job("p", [])
    store.set_job(job.id, state="running")
    assert store.get(job.id).ended is None
    store.set_job(job.id, state="completed", cid="bafy")
    assert store.get(job.id).ended is not None
    assert store.list_jobs()[0].summary_json()["created"].endswith("+00:00")


# -- writes never wedge the database; a damaged file says so --------------------------

def test_a_duplicate_job_id_is_a_clear_error_and_the_store_stays_usable(tmp_path, store):
    import sqlite3

    from bacalhau_flow.errors import BflowError

    store.create_job("p", [(0, "a", [])], job_id="j-dup")
    with pytest.raises(BflowError, match="job id j-dup exists already"):
        store.create_job("p", [(0, "b", [])], job_id="j-dup")
    assert [s.id for s in store.get("j-dup").shards] == ["a"]  # the failed write left nothing behind
    assert store.create_job("p", [], job_id="j-next").state == "queued"  # this connection still writes
    other = JobStore(tmp_path / "jobs.sqlite")  # and another one can write at once: nothing holds the lock
    other.create_job("p", [], job_id="j-other")
    probe = sqlite3.connect(tmp_path / "jobs.sqlite", timeout=0.5)
    probe.execute("BEGIN IMMEDIATE")  # "database is locked" if a transaction had stayed open
    probe.rollback()
    probe.close()
    other.close()


def test_a_write_that_fails_part_way_rolls_back_all_of_it(store):
    job = store.create_job("p", [(0, "a", [])])
    with pytest.raises(RuntimeError):
        with store._write() as db:
            db.execute("UPDATE shards SET state='running' WHERE job_id=?", (job.id,))
            raise RuntimeError("between two statements")
    assert store.get(job.id).shards[0].state == "queued"
    store.set_job(job.id, state="running")  # and the next write goes through
    assert store.get(job.id).state == "running"


def _filled(path):
    store = JobStore(path)
    for i in range(100):
        store.create_job("p", [(0, "a", [{"in": ["/x" * 40]}])], job_id=f"j-{i:03d}")
    store.close()  # the last connection: the WAL is checkpointed into the file
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "text", "truncated"])
def test_a_damaged_store_file_is_a_bflow_error_naming_the_file(tmp_path, damage):
    from bacalhau_flow.errors import JobStoreDamaged

    path = tmp_path / "jobs.sqlite"
    data = _filled(path)
    path.write_bytes({"garbage": b"\x07" * len(data), "text": b"not a database\n",
                      "truncated": data[:len(data) // 2]}[damage])
    with pytest.raises(JobStoreDamaged) as caught:
        JobStore(path)
    assert str(path) in str(caught.value) and "mv " in caught.value.hint and caught.value.exit_code == 2


def test_damage_found_after_open_is_a_bflow_error_too(tmp_path):
    from bacalhau_flow.errors import JobStoreDamaged

    path = tmp_path / "jobs.sqlite"
    data = _filled(path)
    path.write_bytes(data[:4096] + b"\x07" * (len(data) - 4096))  # the header and schema page intact
    store = JobStore(path)
    with pytest.raises(JobStoreDamaged, match="malformed"):
        store.list_jobs()
