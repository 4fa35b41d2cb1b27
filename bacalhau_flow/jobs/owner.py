"""Who drives a job: the process that owns it, and whether that process is still there.

A job that is queued or running belongs to the `bflow` process driving it (`bflow run`, `bflow
rerun`, `bflow resume`, `bflow serve`, or a Python program calling `run`). The job store records
that owner (host name, pid, and the process's start time, so a pid the system gave to another
process later is not mistaken for it) and a heartbeat: a time the owner renews every
HEARTBEAT_SECONDS from a thread of its own (`keep_alive`).

A queued or running job whose owner is gone reads `interrupted` (jobs/store.py). Gone means:

- on this host, no process with that pid and start time runs (it was killed, or crashed); or
- its heartbeat is older than STALE_SECONDS, wherever it ran (another host sharing this
  $BFLOW_HOME, a process that hangs or was stopped).

`bflow resume JOB` (flow/resume.py) takes such a job over. Nothing here is written by the reader:
`interrupted` is what a reader concludes, and it turns back into `running` when a resume claims
the job.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT_SECONDS = 5.0  # how often an owner renews its jobs' heartbeat
STALE_SECONDS = 60.0  # a heartbeat older than this: the owner is gone, wherever it ran


def this_host() -> str:
    return socket.gethostname()


def process_started(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat), as
    a string; None where /proc cannot tell (no such process, not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return stat[stat.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True


_me: dict[int, "Owner"] = {}


@dataclass(frozen=True)
class Owner:
    """A process that drives jobs, as the job store records it."""

    host: str | None
    pid: int | None
    started: str | None = None  # process_started(pid) when it took the job

    @classmethod
    def me(cls) -> "Owner":
        pid = os.getpid()
        if _me.get(pid) is None:  # once per process (a forked child is another one)
            _me[pid] = cls(this_host(), pid, process_started(pid))
        return _me[pid]

    def runs_here(self) -> bool:
        """Whether this process (on this host) still runs: False once it is gone, or its pid
        belongs to a later process. Only meaningful for an owner of this host."""
        if self.pid is None or not pid_alive(self.pid):
            return False
        return self.started is None or process_started(self.pid) in (None, self.started)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host or 'this host'}"


def owner_gone(owner: Owner, heartbeat: float | None, created: float, now: float | None = None) -> bool:
    """Whether the owner of a queued or running job is gone (see the module docstring). A job
    recorded before owners were (no host, no heartbeat) is judged by its pid on this host,
    or, without one, by its age."""
    now = time.time() if now is None else now
    if heartbeat is not None and now - heartbeat > STALE_SECONDS:
        return True
    if owner.host is None or owner.host == this_host():
        if owner.pid is None:
            return heartbeat is None and now - created > STALE_SECONDS
        return not owner.runs_here()
    return heartbeat is None  # another host, and nothing to tell it by


def owner_alive_here(owner: Owner) -> bool:
    """Whether the owner is a process of this host that still runs (stopped or hung ones too):
    such a job must not be taken over, whatever its heartbeat says."""
    return (owner.host is None or owner.host == this_host()) and owner.runs_here()


# -- the heartbeat ------------------------------------------------------------------------------

_lock = threading.Lock()
_beating: dict[str, threading.Thread] = {}  # job store path -> its heartbeat thread (this process)


def keep_alive(db_path: Path) -> None:
    """Renew the heartbeat of this process's queued and running jobs in the store at `db_path`
    every HEARTBEAT_SECONDS, from a daemon thread (one per store and process; started once)."""
    key = str(Path(db_path).resolve())
    with _lock:
        thread = _beating.get(key)
        if thread is not None and thread.is_alive():
            return
        thread = threading.Thread(target=_beat_forever, args=(key, Owner.me()), daemon=True,
                                  name="bflow-job-heartbeat")
        _beating[key] = thread
        thread.start()


def _beat_forever(db_path: str, me: Owner) -> None:
    """One UPDATE per beat, on a connection of its own: it never waits on the job's own writes
    for longer than the beat. A failed beat (the store busy, or gone) is tried again next time."""
    while True:
        time.sleep(HEARTBEAT_SECONDS)
        try:
            db = sqlite3.connect(db_path, timeout=HEARTBEAT_SECONDS, isolation_level=None)
            try:
                db.execute("UPDATE jobs SET heartbeat=? WHERE pid=? AND owner_host=? AND state IN ('queued','running')",
                           (time.time(), me.pid, me.host))
            finally:
                db.close()
        except sqlite3.Error:
            continue


def cancel_jobs_of(path: Path, owner: Owner, reason: str, timeout: float = 1.0) -> list[str]:
    """Mark every queued or running job of `owner` in the store at `path` cancelled (with
    `reason`), with their unfinished shards and attempts; return their ids. What a process
    that must leave at once (a second Ctrl-C: flow/interrupt.py) does last: a connection of its
    own that waits at most `timeout` s for a lock, never the one a stuck thread may hold."""
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE pid=? AND owner_host=? AND state IN "
                                        "('queued','running')", (owner.pid, owner.host))]
        now = time.time()
        for job_id in ids:
            db.execute("UPDATE attempts SET state='cancelled', ended=? WHERE job_id=? AND state='running'", (now, job_id))
            db.execute("UPDATE shards SET state='cancelled' WHERE job_id=? AND state IN ('queued','running')", (job_id,))
            db.execute("UPDATE jobs SET state='cancelled', error=?, ended=? WHERE id=?", (reason, now, job_id))
        db.execute("COMMIT")
        return ids
    finally:
        db.close()
