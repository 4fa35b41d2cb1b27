"""`bflow logs`: a job's (or one shard's) stdout to stdout and stderr to stderr; with `-f`,
following a job that still runs.

Following reads the job store, which the requester writes as each shard ends: every POLL
seconds, the shards that ended since the last look are printed (in index order among them),
and the command ends once the job has. A job whose requester is gone (its process no longer
runs: killed, or its machine rebooted) would never end: following stops with a line saying so.
"""

from __future__ import annotations

import re
import sys
import time

from ..errors import BflowError, JobNotFound
from ..jobs.store import TERMINAL, JobStore, ShardRecord, process_alive
from ..storage import ContentStore

POLL = 0.5  # seconds between looks at the job store
UNFINISHED = ("queued", "running")
RECORDED_WITHIN = 60.0  # seconds `-f` waits for a whole job id to be recorded (`bflow run --detach` prints it first)
WHOLE_ID = re.compile(r"j-[0-9a-f]{32}")


def job_to_follow(store: JobStore, job: str, poll: float = POLL):
    """The record of `job`; a whole job id that is not recorded yet (a detached run still
    planning) is waited for, RECORDED_WITHIN seconds. Raises JobNotFound as `store.get`."""
    deadline = time.monotonic() + RECORDED_WITHIN
    while True:
        try:
            return store.get(job)
        except JobNotFound:
            if not WHOLE_ID.fullmatch(job) or time.monotonic() > deadline:
                raise
        time.sleep(poll)


def chosen_shards(store: JobStore, record, shard: int | None, attempt: int | None) -> list[ShardRecord]:
    """The shards to print: all, or `shard` (at `attempt`, an earlier attempt's logs).
    Raises BflowError for a shard or an attempt the job does not have."""
    if shard is None:
        return record.shards
    shards = [s for s in record.shards if s.index == shard]
    if not shards:
        raise BflowError(f"job {record.id} has no shard {shard}", hint=f"it has shards 0..{len(record.shards) - 1}")
    if attempt is not None:
        rows = [a for a in store.attempts(record.id, shard) if a["attempt"] == attempt]
        if not rows:
            raise BflowError(f"shard {shard} has no attempt {attempt}",
                             hint=f"`bflow describe {record.id[:10]}` shows its attempts")
        shards[0].stdout_cid, shards[0].stderr_cid = rows[0]["stdout_cid"], rows[0]["stderr_cid"]
    return shards


def print_logs(content: ContentStore, shards: list[ShardRecord]) -> None:
    from ..jobs.results import stream

    for chunk in stream(content, shards, "stdout"):
        sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    for chunk in stream(content, shards, "stderr"):
        sys.stderr.buffer.write(chunk)
    sys.stderr.flush()


def follow(store: JobStore, content: ContentStore, job_id: str, shard: int | None = None,
           say=None, poll: float = POLL) -> str:
    """Print each shard's logs as it ends, until the job ends; return the job's last state.
    `say` gets the line printed when the job's requester is gone. KeyboardInterrupt is the
    caller's (Ctrl-C)."""
    printed: set[int] = set()
    gone = 0  # looks in a row that found the requester's process gone
    while True:
        record = store.get(job_id)
        ended = record.state not in UNFINISHED
        fresh = [s for s in record.shards if s.index not in printed and s.state in TERMINAL
                 and (shard is None or s.index == shard)]
        if fresh:
            print_logs(content, fresh)
            printed.update(s.index for s in fresh)
        if ended or (shard is not None and shard in printed):
            return record.state
        gone = gone + 1 if record.pid and not process_alive(record.pid) else 0
        if gone >= 2:
            if say:
                say(f"job {record.id} is {record.state} but its requester (pid {record.pid}) is gone: "
                    "its unfinished shards will not end here")
            return record.state
        time.sleep(poll)
