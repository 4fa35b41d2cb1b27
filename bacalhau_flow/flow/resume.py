"""`bflow resume JOB`: continue, in this process, a job whose requester died.

A job reads `interrupted` once the process driving it is gone (jobs/owner.py): killed,
crashed, its machine gone. Resume takes it over and finishes it as that process would have:

- It is refused for a job whose owner still runs (on this host its pid; elsewhere a fresh
  heartbeat: "still driven by ..."), and for a job that ended (`bflow rerun` runs the failed
  shards of one). Of two resumes at once, one claims the job (jobs/store.py `claim`).
- The pipeline comes from the job's spec file, checked as `bflow rerun` checks it (there, the
  pipeline in it, the transform unchanged: flow/rerun.py).
- Shards that completed (or were reused) are kept; shards that failed for good stay failed.
- A shard whose attempt was running on a node of a network reached by URL is *followed*
  (network/requester.py `follow`): this process has the dead one's requester id (the key of
  this $BFLOW_HOME), so the node's result, offered to that id for RESULT_DELIVERY_SECONDS, and
  its heartbeats reach it; nodes keep running the attempt as long as its requester names the
  job within SILENT_SECONDS (network/liveness.py), which the resumed one does from its start.
  Only the node recorded for that attempt is heard about it. A node that no longer has the
  attempt (it stopped it, or gave up offering its result) is not heard for a lease: the shard
  runs again, as a new attempt.
- On the embedded network the nodes ended with the process that ran them: their attempts are
  recorded as lost and the shards run again. The commands those nodes had started on this
  machine are killed first (the cgroup of the dead process, where the local executor keeps
  them), so none of them finishes after its shard ran again.
- Every other unfinished shard (queued, or between retries) is dispatched, and so is a followed
  one whose attempt failed (the old process's death may be why: its gateway served the
  shard's inputs). Retries count from the resume, as for a rerun.
- One Prefect flow run, named `<job id>-resume`, one task run per shard followed or dispatched.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Callable

from ..errors import BflowError
from ..home import bflow_home, jobs_db, store_root
from ..jobs.owner import Owner, owner_alive_here, this_host
from ..jobs.store import JobRecord, JobStore
from ..plan.datum import Datum, Shard
from ..storage import ContentStore
from ..transports.redact import redacted
from .rerun import _pipeline_of, run_to_end

ENDED = ("completed", "failed", "cancelled")


class ResumeError(BflowError):
    """A job cannot be resumed (its owner still drives it, or it ended)."""


def resume_job(prefix: str, *, network: str | None = None, nodes: int = 3,
               on_progress: Callable[[int, str], None] | None = None) -> tuple[JobRecord, dict[str, int]]:
    """Continue job `prefix`; return (its record afterwards, counts of the shards "kept",
    "followed" and "dispatched"). `network`: the one to continue on (default: the one it ran
    on). Raises JobNotFound, ResumeError, RerunError (its spec), JobCancelled on Ctrl-C."""
    jobs = JobStore(jobs_db())
    try:
        record = jobs.get(prefix)
        refuse_unless_interrupted(record)
        pipeline = _pipeline_of(record)
        network = network if network is not None else record.network
        jobs.claim(record.id)  # from here on this process drives it
        if network is None:
            _end_leftovers(record.owner, record.id)
        return _resume(jobs.get(record.id), pipeline, jobs, network, nodes, on_progress)
    finally:
        jobs.close()


def refuse_unless_interrupted(record: JobRecord) -> None:
    """Raise ResumeError unless `record` is a job whose owner is gone."""
    short = record.id[:10]
    if record.state in ENDED:
        raise ResumeError(f"job {record.id} already ended ({record.state}): nothing to resume",
                          hint=f"`bflow rerun {short}` runs its failed or cancelled shards again")
    owner = record.owner
    if record.state != "interrupted":
        beat = f", heartbeat {time.time() - record.heartbeat:.0f} s ago" if record.heartbeat else ""
        raise ResumeError(f"job {record.id} is still driven by {owner.describe()}{beat}",
                          hint=f"wait for it, or stop it with `bflow cancel {short}`")
    if owner_alive_here(owner):  # silent for long, but its process is there: stopped, or hung
        raise ResumeError(f"job {record.id}: its process {owner.pid} still exists but has not said it "
                          "drives the job for a while (stopped or hung?)",
                          hint=f"end it (`kill {owner.pid}`), then `bflow resume {short}`")


def _resume(record: JobRecord, pipeline, jobs: JobStore, network: str | None, nodes: int,
            on_progress) -> tuple[JobRecord, dict[str, int]]:
    from .prefect_api import use_prefect

    use_prefect()
    from .compile import compile_flow

    embedded = network is None
    followed: dict[int, tuple[int, str]] = {}  # shard index -> (attempt, node) to follow
    pending: list[int] = []
    for shard in record.shards:
        if shard.state not in ("queued", "running"):
            continue  # completed or reused: kept; failed or cancelled for good: as it ended
        pending.append(shard.index)
        last = (jobs.attempts(record.id, shard.index) or [None])[-1]
        if last is None or last["state"] != "running":
            continue
        if not embedded and last["node"]:
            followed[shard.index] = (last["attempt"], last["node"])
        else:
            why = ("its node ended with the process that ran the job" if embedded
                   else "lost with the process that ran the job, before a node took it")
            jobs.finish_attempt(record.id, shard.index, last["attempt"], state="cancelled", node=last["node"],
                                exit_code=None, cid=None, stdout_cid=None, stderr_cid=None, error=why, final=False)
    jobs.set_job(record.id, state="running", error=None, network=redacted(network))
    counts = {"kept": len(record.shards) - len(pending), "followed": len(followed),
              "dispatched": len(pending) - len(followed)}
    plan = [Shard(pipeline.name, s.index, tuple(Datum.from_json(d) for d in s.datums)) for s in record.shards]
    run = _resumed_run()(pipeline, plan, jobs.get(record.id), jobs, ContentStore(store_root()),
                         bflow_home() / "scratch", on_progress, pending=pending, followed=followed)
    if not pending:  # every shard had ended: the old process died while finishing
        return run_to_end(jobs, record.id, run.finish), counts
    return run_to_end(jobs, record.id, lambda: compile_flow(run, network, nodes, run_name=f"{record.id}-resume")(
        return_state=True)), counts


def _resumed_run():
    """The JobRun that follows the attempts a dead requester left running (a class made on
    first use: job_run imports the network side, which `bflow resume`'s refusals need not)."""
    from .job_run import JobRun, ShardCancelled

    class ResumedRun(JobRun):
        def __init__(self, *args, followed: dict[int, tuple[int, str]], **kwargs):
            super().__init__(*args, **kwargs)
            self.followed = dict(followed)

        async def dispatch(self, requester, index: int):
            """A followed shard's first dispatch takes its attempt's result from the node; if
            the node no longer has the attempt, or it failed, the shard is dispatched anew."""
            taken = self.followed.pop(index, None)
            if taken is not None and self.cancelled is None:
                result = await self._follow(requester, index, *taken)
                if result is not None:
                    return result
            return await super().dispatch(requester, index)

        async def _follow(self, requester, index: int, attempt: int, node: str):
            self._requester = requester
            self.on_progress(index, "running")
            following = asyncio.ensure_future(requester.follow(self.request(self.shards[index], attempt), node))
            self._in_flight[index] = following  # `cancel` stops it as it stops a dispatch
            try:
                result = await following
            except asyncio.CancelledError:
                if self.cancelled is not None and not asyncio.current_task().cancelling():
                    raise ShardCancelled(self.cancelled) from None
                raise
            finally:
                self._in_flight.pop(index, None)
            if result is None:
                self.jobs.finish_attempt(self.job.id, index, attempt, state="cancelled", node=node, exit_code=None,
                                         cid=None, stdout_cid=None, stderr_cid=None, final=False,
                                         error=f"node {node} no longer had it when the job was resumed")
                return None
            # completed: taken. Failed: run again, whatever the reason (it may be the old process's
            # death itself: its gateway, which served the shard's inputs, went with it)
            self._record(result, final=result.state == "completed")
            return result if result.state == "completed" else None

    return ResumedRun


def _end_leftovers(owner: Owner, job_id: str) -> None:
    """Kill what the embedded nodes of the job's dead `owner` may still run on this machine.
    Their commands end with that process (executors/cgroups.py, executors/supervisor.py); this
    is the safety net for what escaped (the process that ends them was killed too, say), which
    would otherwise finish after its shard ran again. Found two ways: the cgroup `bflow-<pid>`
    where the local executor keeps the commands of process `pid`, and every process whose
    environment names the job (`BFLOW_JOB_ID`, which each shard's command gets), for machines
    without cgroups. Best effort; only for an owner of this host that is gone."""
    if owner.pid is None or owner.host not in (None, this_host()) or owner_alive_here(owner):
        return
    try:
        from ..executors.cgroups import own_cgroup_dir

        own = own_cgroup_dir()
        kill = own / f"bflow-{owner.pid}" / "cgroup.kill" if own is not None else None
        if kill is not None and kill.exists():
            kill.write_text("1")
    except (ImportError, OSError):
        pass
    marker = f"BFLOW_JOB_ID={job_id}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue
