"""Job and shard records in SQLite under $BFLOW_HOME: the record of truth.

Prefect shows runs; this store is what `bflow list/describe/logs/get` read, and what
survives a crash. One row per job, per shard, and per shard attempt.

A queued or running job records its owner, the process driving it, with a heartbeat
(jobs/owner.py); read by anyone else once that owner is gone, the job's state is
`interrupted` (what `bflow resume` continues). The state column itself keeps what the owner
last wrote.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import BflowError, JobNotFound, JobStoreDamaged
from .owner import Owner, keep_alive, owner_gone

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, spec_file TEXT, state TEXT NOT NULL,
    created REAL NOT NULL, ended REAL, cid TEXT, shard_count INTEGER NOT NULL,
    error TEXT, pid INTEGER, flow_run_id TEXT, conflict TEXT NOT NULL DEFAULT 'error',
    published TEXT
);
CREATE TABLE IF NOT EXISTS shards (
    job_id TEXT NOT NULL, idx INTEGER NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL,
    node TEXT, attempts INTEGER NOT NULL DEFAULT 0, exit_code INTEGER, cid TEXT,
    stdout_cid TEXT, stderr_cid TEXT, error TEXT, datums TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL, idx INTEGER NOT NULL, attempt INTEGER NOT NULL, node TEXT,
    state TEXT NOT NULL, exit_code INTEGER, cid TEXT, stdout_cid TEXT, stderr_cid TEXT,
    error TEXT, started REAL, ended REAL,
    PRIMARY KEY (job_id, idx, attempt)
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created);
CREATE TABLE IF NOT EXISTS file_cids (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL, cid TEXT NOT NULL, checked_ns INTEGER NOT NULL
);
"""

JOB_STATES = ("queued", "running", "completed", "failed", "cancelled", "interrupted")
UNENDED = ("queued", "running")  # stored states of a job whose owner may still drive it
SHARD_STATES = ("queued", "running", "completed", "failed", "skipped", "cancelled")
TERMINAL = ("completed", "failed", "cancelled", "skipped")


@dataclass
class ShardRecord:
    index: int
    id: str
    state: str
    datums: list[dict[str, list[str]]]
    node: str | None = None
    attempts: int = 0
    exit_code: int | None = None
    cid: str | None = None
    stdout_cid: str | None = None
    stderr_cid: str | None = None
    error: str | None = None
    content_key: str | None = None
    reused_from: str | None = None  # a skipped shard: the job that ran it

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "id": self.id,
            "state": self.state,
            "node": self.node,
            "attempts": self.attempts,
            "exit_code": self.exit_code,
            "cid": self.cid,
            "error": self.error,
            "reused_from": self.reused_from,
        }


@dataclass
class JobRecord:
    id: str
    pipeline: str
    state: str
    created: float
    shard_count: int
    spec_file: str | None = None
    ended: float | None = None
    cid: str | None = None
    error: str | None = None
    pid: int | None = None
    flow_run_id: str | None = None
    conflict: str = "error"
    published: str | None = None  # the url the merged outputs were published to (output.publish)
    transform_key: str | None = None  # jobs/content_key.py: what `bflow rerun` checks the spec against
    owner_host: str | None = None  # the host of the process driving a queued or running job (jobs/owner.py)
    owner_started: str | None = None  # when that process (`pid`) started: tells it from a later one
    heartbeat: float | None = None  # when its owner last said it still drives the job
    network: str | None = None  # the network it ran on (credentials redacted); None: the embedded one
    stored_state: str | None = None  # the state as its owner wrote it (`state` may read interrupted)
    reused: int = 0  # shards skipped because an earlier job's result was reused (filled by list_jobs)
    completed: int = 0  # shards completed or reused (filled by list_jobs)
    dropped: int = 0  # progress, results and blocks dropped: from a node the shard was not given to
    # what its pipeline:// inputs read: [{"pipeline": NAME, "job": JOB ID, "cid": CID}]
    upstreams: list[dict] = field(default_factory=list)
    shards: list[ShardRecord] = field(default_factory=list)

    @property
    def owner(self) -> Owner:
        return Owner(self.owner_host, self.pid, self.owner_started)

    @property
    def created_iso(self) -> str:
        return datetime.fromtimestamp(self.created, timezone.utc).isoformat()

    def summary_json(self) -> dict:
        return {"id": self.id, "pipeline": self.pipeline, "state": self.state, "created": self.created_iso,
                "shards": self.shard_count, "completed": self.completed, "reused": self.reused}

    def owner_json(self) -> dict | None:
        """The process driving (or that drove) a job not ended: {"host", "pid", "heartbeat"}."""
        if self.stored_state not in UNENDED:
            return None
        beat = datetime.fromtimestamp(self.heartbeat, timezone.utc).isoformat() if self.heartbeat else None
        return {"host": self.owner_host, "pid": self.pid, "heartbeat": beat}

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "state": self.state,
            "cid": self.cid,
            "created": self.created_iso,
            "error": self.error,
            "published": self.published,
            "upstreams": self.upstreams,
            "dropped": self.dropped,
            "owner": self.owner_json(),
            "shards": [s.to_json() for s in self.shards],
        }


def new_job_id() -> str:
    return "j-" + uuid.uuid4().hex


class JobStore:
    """Thread-safe: one connection, one lock. WAL, so other processes can read while a job runs.

    Every write is one transaction (`_write`): it commits whole or, when a statement fails,
    rolls back, so a failed write never leaves the database locked. A damaged database file
    raises JobStoreDamaged, on open or on any later read or write."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            with self._guard():
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            with self._write() as db:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                # Columns added after the first release: a store made before them gets them here.
                self._add_column("jobs", "published", "TEXT")  # output.publish
                self._add_column("jobs", "upstreams", "TEXT")  # pipeline:// inputs, JSON (flow/dag.py)
                self._add_column("jobs", "transform_key", "TEXT")  # reprocess / rerun (jobs/content_key.py)
                self._add_column("jobs", "dropped", "INTEGER")  # reports from nodes not given the shard
                self._add_column("jobs", "owner_host", "TEXT")  # the owner of a running job (jobs/owner.py)
                self._add_column("jobs", "owner_started", "TEXT")
                self._add_column("jobs", "heartbeat", "REAL")
                self._add_column("jobs", "network", "TEXT")  # what `bflow resume` reconnects to
                self._add_column("shards", "content_key", "TEXT")
                self._add_column("shards", "reused_from", "TEXT")  # the job whose result a skipped shard reuses
                db.execute("CREATE INDEX IF NOT EXISTS shards_content_key ON shards (content_key)")
        except BaseException:
            self._db.close()
            raise

    def _add_column(self, table: str, column: str, kind: str) -> None:
        """Inside `_write`, whose write lock keeps another process from adding it meanwhile."""
        columns = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Hold the lock; a damaged file ("file is not a database", "disk image is malformed": exactly
        sqlite3.DatabaseError, none of its subclasses such as OperationalError) is JobStoreDamaged."""
        with self._lock:
            try:
                yield
            except sqlite3.DatabaseError as e:
                if type(e) is not sqlite3.DatabaseError:
                    raise
                raise JobStoreDamaged(
                    f"the job store {self.path} is damaged: {e}",
                    hint=f"move it aside (mv {self.path} {self.path}.damaged) to start a new job history; "
                         f"`sqlite3 {self.path}.damaged .recover` may save the old one",
                ) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT) under the lock; on any exception
        it rolls back and re-raises, so the connection and the database are never left locked."""
        with self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):  # the error being raised says more than this one
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._guard():
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args=()) -> sqlite3.Row | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    # -- writing ----------------------------------------------------------------
    def create_job(self, pipeline: str, shards: list[tuple[int, str, list]], *, spec_file: str | None = None,
                   conflict: str = "error", job_id: str | None = None, transform_key: str | None = None,
                   content_keys: list[str | None] | None = None, network: str | None = None) -> JobRecord:
        """Record a new queued job and its shards, owned by this process (its heartbeat kept
        from now on: jobs/owner.py); `content_keys[i]` is shard i's content key
        (jobs/content_key.py), None where it could not be computed (such a shard is never reused).
        Raises BflowError when a job `job_id` exists already (nothing is written then)."""
        job_id = job_id or new_job_id()
        keys = content_keys if content_keys is not None else [None] * len(shards)
        now = time.time()
        me = Owner.me()
        with self._write() as db:
            try:
                db.execute(
                    "INSERT INTO jobs (id, pipeline, spec_file, state, created, shard_count, conflict, transform_key,"
                    " pid, owner_host, owner_started, heartbeat, network) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (job_id, pipeline, spec_file, "queued", now, len(shards), conflict, transform_key,
                     me.pid, me.host, me.started, now, network),
                )
            except sqlite3.IntegrityError:
                raise BflowError(f"job id {job_id} exists already",
                                 hint="leave the job id out to get a new one") from None
            db.executemany(
                "INSERT INTO shards (job_id, idx, id, state, datums, content_key) VALUES (?,?,?,?,?,?)",
                [(job_id, idx, sid, "queued", json.dumps(datums), key)
                 for (idx, sid, datums), key in zip(shards, keys)],
            )
        keep_alive(self.path)
        return self.get(job_id)

    def claim(self, job_id: str) -> JobRecord:
        """Make this process the owner of job `job_id`, whose owner is gone (`bflow resume`,
        `bflow rerun`): checked and written in one transaction, so of two processes claiming
        it at once one gets it. Raises BflowError when its owner is not gone."""
        me = Owner.me()
        with self._write() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id}", hint="`bflow list` shows the jobs")
            job = _job(row)
            if job.stored_state in UNENDED and job.state != "interrupted" and job.owner != me:
                raise BflowError(f"job {job_id} is driven by {job.owner.describe()}",
                                 hint=f"wait for it, or stop it with `bflow cancel {job_id[:10]}`")
            db.execute("UPDATE jobs SET pid=?, owner_host=?, owner_started=?, heartbeat=? WHERE id=?",
                       (me.pid, me.host, me.started, time.time(), job_id))
        keep_alive(self.path)
        return self.get(job_id)

    def set_job(self, job_id: str, **fields) -> None:
        if "state" in fields and fields["state"] in TERMINAL:
            fields.setdefault("ended", time.time())
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._write() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def start_attempt(self, job_id: str, index: int, node: str | None = None) -> int:
        """Mark a shard running and return the number of its new attempt."""
        with self._write() as db:
            row = db.execute("SELECT attempts FROM shards WHERE job_id=? AND idx=?", (job_id, index)).fetchone()
            attempt = row["attempts"] + 1
            db.execute(
                "UPDATE shards SET state='running', attempts=?, node=? WHERE job_id=? AND idx=?",
                (attempt, node, job_id, index),
            )
            db.execute(
                "INSERT OR REPLACE INTO attempts (job_id, idx, attempt, node, state, started) VALUES (?,?,?,?,?,?)",
                (job_id, index, attempt, node, "running", time.time()),
            )
        return attempt

    def assign_node(self, job_id: str, index: int, attempt: int, node: str) -> None:
        """Record which node accepted a running attempt."""
        with self._write() as db:
            db.execute("UPDATE shards SET node=? WHERE job_id=? AND idx=?", (node, job_id, index))
            db.execute("UPDATE attempts SET node=? WHERE job_id=? AND idx=? AND attempt=?",
                       (node, job_id, index, attempt))

    def finish_attempt(self, job_id: str, index: int, attempt: int, *, state: str, node: str | None,
                       exit_code: int | None, cid: str | None, stdout_cid: str | None,
                       stderr_cid: str | None, error: str | None, started: float | None = None,
                       ended: float | None = None, final: bool = True) -> None:
        """Record how one attempt ended; with `final`, the shard takes that state too."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO attempts (job_id, idx, attempt, node, state, exit_code, cid, stdout_cid,"
                " stderr_cid, error, started, ended) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (job_id, index, attempt, node, state, exit_code, cid, stdout_cid, stderr_cid, error,
                 started, ended or time.time()),
            )
            db.execute(
                "UPDATE shards SET state=?, node=?, exit_code=?, cid=?, stdout_cid=?, stderr_cid=?, error=?"
                " WHERE job_id=? AND idx=?",
                (state if final else "queued", node, exit_code, cid, stdout_cid, stderr_cid, error, job_id, index),
            )

    def cancel_unfinished_shards(self, job_id: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE attempts SET state='cancelled', ended=? WHERE job_id=? AND state='running'",
                (time.time(), job_id),
            )
            db.execute(
                "UPDATE shards SET state='cancelled' WHERE job_id=? AND state IN ('queued','running')", (job_id,)
            )

    # -- reuse and rerun (jobs/content_key.py, flow/rerun.py) ----------------------
    def reusable(self, pipeline: str, keys: list[str], exclude_job: str | None = None) -> dict[str, ShardRecord]:
        """For each content key, the newest shard of a job of `pipeline` that succeeded with it
        (completed, or itself skipped with a reused result), whatever state its job ended in.
        `reused_from` of each answer names the job that actually ran it."""
        found: dict[str, ShardRecord] = {}
        wanted = sorted({k for k in keys if k})
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            rows = self._rows(
                "SELECT s.*, j.created AS job_created FROM shards s JOIN jobs j ON j.id = s.job_id"
                f" WHERE s.content_key IN ({','.join('?' * len(chunk))}) AND j.pipeline = ? AND j.id != ?"
                " AND s.state IN ('completed', 'skipped') AND s.cid IS NOT NULL ORDER BY j.created DESC",
                (*chunk, pipeline, exclude_job or ""),
            )
            for r in rows:
                if r["content_key"] not in found:
                    found[r["content_key"]] = ShardRecord(
                        index=r["idx"], id=r["id"], state=r["state"], datums=[], node=r["node"],
                        attempts=r["attempts"], exit_code=r["exit_code"], cid=r["cid"],
                        stdout_cid=r["stdout_cid"], stderr_cid=r["stderr_cid"], content_key=r["content_key"],
                        reused_from=r["reused_from"] or r["job_id"])
        return found

    def mark_skipped(self, job_id: str, reused: dict[int, ShardRecord]) -> None:
        """Shards of `job_id` (by index) take the result of an earlier run and the state skipped."""
        with self._write() as db:
            db.executemany(
                "UPDATE shards SET state='skipped', node=?, attempts=0, exit_code=?, cid=?, stdout_cid=?,"
                " stderr_cid=?, error=NULL, reused_from=? WHERE job_id=? AND idx=?",
                [(r.node, r.exit_code, r.cid, r.stdout_cid, r.stderr_cid, r.reused_from, job_id, index)
                 for index, r in reused.items()],
            )

    def requeue_shards(self, job_id: str, keys: dict[int, str | None]) -> None:
        """Shards about to run again (`bflow rerun`): queued, with the content key they run with
        now; their earlier attempts stay recorded."""
        with self._write() as db:
            db.executemany(
                "UPDATE shards SET state='queued', error=NULL, reused_from=NULL, content_key=? WHERE job_id=? AND idx=?",
                [(key, job_id, index) for index, key in keys.items()],
            )
            db.execute("UPDATE jobs SET state='queued', ended=NULL, error=NULL WHERE id=?", (job_id,))

    def cached_file_cids(self, directory: str) -> dict[str, tuple]:
        """The cached CIDs of local files under `directory`: path -> (size, mtime_ns, ctime_ns,
        ino, cid, checked_ns)."""
        low = directory.rstrip("/") + "/"
        rows = self._rows("SELECT * FROM file_cids WHERE path >= ? AND path < ?", (low, low[:-1] + "0"))
        return {r["path"]: (r["size"], r["mtime_ns"], r["ctime_ns"], r["ino"], r["cid"], r["checked_ns"])
                for r in rows}

    def cache_file_cids(self, rows: list[tuple]) -> None:
        """Remember (path, size, mtime_ns, ctime_ns, ino, cid, checked_ns) rows."""
        if rows:
            with self._write() as db:
                db.executemany("INSERT OR REPLACE INTO file_cids VALUES (?,?,?,?,?,?,?)", rows)

    def file_cids_under(self, directory: str) -> dict[str, tuple]:
        """What `cached_file_cids` answers, read as plain tuples: a sqlite3.Row per file, read
        by column name, cost most of a warm content key (issue 13: 10 µs a file)."""
        low = directory.rstrip("/") + "/"
        with self._guard():
            cursor = self._db.cursor()
            cursor.row_factory = None
            rows = cursor.execute("SELECT path, size, mtime_ns, ctime_ns, ino, cid, checked_ns FROM file_cids"
                                  " WHERE path >= ? AND path < ?", (low, low[:-1] + "0")).fetchall()
        return {row[0]: row[1:] for row in rows}

    # -- reading ----------------------------------------------------------------
    def resolve(self, prefix: str) -> str:
        """The one job id starting with `prefix`. Raises JobNotFound for none or several."""
        rows = self._rows("SELECT id, pipeline FROM jobs WHERE id LIKE ? ORDER BY created DESC LIMIT 6",
                          (prefix.replace("%", "").replace("_", "") + "%",))
        if not rows:
            raise JobNotFound(f"no job matches {prefix!r}", hint="`bflow list` shows the jobs")
        if len(rows) > 1:
            shown = ", ".join(f"{r['id']} ({r['pipeline']})" for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise JobNotFound(f"{prefix!r} matches several jobs: {shown}", hint="give more characters of the job id")
        return rows[0]["id"]

    def get(self, prefix: str, with_shards: bool = True) -> JobRecord:
        job_id = self.resolve(prefix)
        row = self._one("SELECT * FROM jobs WHERE id=?", (job_id,))
        job = _job(row)
        if with_shards:
            job.shards = self.shards(job_id)
        return job

    def shards(self, job_id: str) -> list[ShardRecord]:
        rows = self._rows("SELECT * FROM shards WHERE job_id=? ORDER BY idx", (job_id,))
        return [
            ShardRecord(index=r["idx"], id=r["id"], state=r["state"], datums=json.loads(r["datums"]),
                        node=r["node"], attempts=r["attempts"], exit_code=r["exit_code"], cid=r["cid"],
                        stdout_cid=r["stdout_cid"], stderr_cid=r["stderr_cid"], error=r["error"],
                        content_key=r["content_key"], reused_from=r["reused_from"])
            for r in rows
        ]

    def shard_outcomes(self, job_id: str) -> list[ShardRecord]:
        """`shards` without their datums (`datums` is []): what merging and counting need. Parsing
        every shard's datums cost ~0.3 s a read for a job of 100,000 datums (issue 13)."""
        rows = self._rows("SELECT idx, id, state, node, attempts, exit_code, cid, stdout_cid, stderr_cid, error,"
                          " content_key, reused_from FROM shards WHERE job_id=? ORDER BY idx", (job_id,))
        return [
            ShardRecord(index=r["idx"], id=r["id"], state=r["state"], datums=[], node=r["node"],
                        attempts=r["attempts"], exit_code=r["exit_code"], cid=r["cid"], stdout_cid=r["stdout_cid"],
                        stderr_cid=r["stderr_cid"], error=r["error"], content_key=r["content_key"],
                        reused_from=r["reused_from"])
            for r in rows
        ]

    def attempts(self, job_id: str, index: int) -> list[dict]:
        rows = self._rows("SELECT * FROM attempts WHERE job_id=? AND idx=? ORDER BY attempt", (job_id, index))
        return [dict(r) for r in rows]

    def latest_job(self, pipeline: str, state: str | None = None, before: float | None = None) -> JobRecord | None:
        """The newest job of `pipeline` (in `state`, created before `before`, when given), without
        its shards; or None."""
        row = self._one("SELECT * FROM jobs WHERE pipeline=? AND (? IS NULL OR state=?) AND (? IS NULL OR created<?)"
                        " ORDER BY created DESC LIMIT 1", (pipeline, state, state, before, before))
        return _job(row) if row is not None else None

    def list_jobs(self, limit: int = 100, *, pipeline: str | None = None, state: str | None = None) -> list[JobRecord]:
        """The newest `limit` jobs (of `pipeline`, in `state`, when given), with their counts."""
        stored = "unended" if state in (*UNENDED, "interrupted") else state
        rows = self._rows(
            "SELECT j.*, (SELECT COUNT(*) FROM shards s WHERE s.job_id = j.id AND s.state = 'skipped') AS reused,"
            " (SELECT COUNT(*) FROM shards s WHERE s.job_id = j.id AND s.state IN ('completed', 'skipped'))"
            " AS completed FROM jobs j WHERE (? IS NULL OR j.pipeline = ?) AND (? IS NULL OR j.state IN (?, ?))"
            " ORDER BY created DESC LIMIT ?",
            (pipeline, pipeline, stored, *((stored, stored) if stored != "unended" else UNENDED), limit))
        jobs = [_job(r) for r in rows]
        for job, row in zip(jobs, rows):
            job.reused, job.completed = row["reused"], row["completed"]
        # queued, running and interrupted are told apart by the owner, not by the stored state
        return [j for j in jobs if state is None or j.state == state]


def _job(row: sqlite3.Row) -> JobRecord:
    job = JobRecord(
        id=row["id"], pipeline=row["pipeline"], state=row["state"], created=row["created"],
        shard_count=row["shard_count"], spec_file=row["spec_file"], ended=row["ended"], cid=row["cid"],
        error=row["error"], pid=row["pid"], flow_run_id=row["flow_run_id"], conflict=row["conflict"],
        published=row["published"], upstreams=json.loads(row["upstreams"] or "[]"),
        transform_key=row["transform_key"], dropped=row["dropped"] or 0,
        owner_host=row["owner_host"], owner_started=row["owner_started"], heartbeat=row["heartbeat"],
        network=row["network"], stored_state=row["state"],
    )
    # Its owner reads what it wrote; anyone else reads a job whose owner is gone as interrupted.
    if job.state in UNENDED and job.owner != Owner.me() and owner_gone(job.owner, job.heartbeat, job.created):
        job.state = "interrupted"
    return job


def process_alive(pid: int) -> bool:
    """Whether the process `pid` (a job's `pid`: the `bflow run` driving it) still runs."""
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False

