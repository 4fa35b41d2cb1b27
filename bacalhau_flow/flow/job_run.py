"""One job in flight: turns shards into requests, records every attempt in the job
store, and finishes the job (merged outputs, final state).

The shard task's body is `JobRun.dispatch(requester, index)`; a failed attempt raises
`ShardFailed`, which the task turns into a Failed state (flow/compile.py), so Prefect's
retries send the shard again, to another node where one exists (the requester avoids the
nodes this shard failed on).

`JobRun.cancel` (Cancel in the Prefect UI: flow/cancel_watch.py) stops the job from the task
runner's loop: each in-flight attempt runs as an asyncio task of its own, which it cancels
(the node kills the command), and every dispatch after it raises `ShardCancelled`.

Reuse (`reprocess: changed`) is decided here, on the requester, before anything is
dispatched: `reuse_results` marks the shards whose content key (jobs/content_key.py) already
succeeded as `skipped`, with the earlier result, and `JobRun.pending` holds the others. Only
pending shards become Prefect task runs: a skipped shard costs one SQL row, not a task run
(Prefect records about 35 task runs/s), and a job with nothing pending runs no flow at all
(flow/runner.py).
"""

from __future__ import annotations

import asyncio
from typing import Callable

from ..errors import NoNodeCanRun, OutputConflict, PublishError
from ..jobs.publish import publish_outputs, publish_url
from ..jobs.results import merge_outputs
from ..jobs.store import JobRecord, JobStore, ShardRecord
from ..network.messages import InputRef, ResourceAsk, ShardRequest, ShardResult, TransformRef
from ..network.requester import Requester
from ..network.secrets import read_secrets
from ..plan import Shard
from ..plan.combinators import leaves
from ..spec import Pipeline
from ..storage import ContentStore


class ShardFailed(Exception):
    """An attempt of a shard failed; Prefect may retry it. `result` is the attempt's result
    (None when no node could take it)."""

    def __init__(self, message: str, retry: bool = True, result: ShardResult | None = None):
        super().__init__(message)
        self.retry = retry
        self.result = result


class ShardCancelled(Exception):
    """The job was cancelled (`JobRun.cancel`) before or while this shard ran."""


ProgressHook = Callable[[int, str], None]  # (shard index, new state)


class JobRun:
    def __init__(self, pipeline: Pipeline, shards: list[Shard], job: JobRecord, jobs: JobStore,
                 content: ContentStore, scratch, on_progress: ProgressHook | None = None,
                 pending: list[int] | None = None, secrets: dict[str, str] | None = None):
        self.pipeline = pipeline
        self.shards = shards
        # The shard indices this run dispatches (default: all); the others are skipped or done.
        self.pending = list(range(len(shards))) if pending is None else list(pending)
        self.job = job
        self.jobs = jobs
        self.content = content
        self.scratch = scratch
        self.on_progress = on_progress or (lambda index, state: None)
        self._tried: dict[int, set[str]] = {}
        self._in_flight: dict[int, asyncio.Task] = {}  # shard index -> its running attempt
        self.cancelled: str | None = None  # why the job was cancelled (`cancel`), if it was
        self.finished = False  # `finish` began: too late to cancel
        self.ended: JobRecord | None = None  # the record `finish` returned
        self.interrupted = False  # Ctrl-C stopped the job (flow/compile.py re-raises it after the flow)
        self._hopeless: dict[int, str] = {}  # shards no node can ever run -> why
        self._requester: Requester | None = None  # the one dispatching: it counts forged reports
        # transform.secrets, read here (network/secrets.py): kept in memory only, never recorded
        self._secrets = secrets if secrets is not None else read_secrets(pipeline.transform.secrets,
                                                                         pipeline.base_dir)
        # Attempts a shard already had before this run (`bflow rerun`): retries count from there.
        self._earlier = {s.index: s.attempts for s in job.shards}
        base_dir = pipeline.base_dir
        self._inputs = [InputRef(name=leaf.name, url=leaf.url) for leaf in leaves(pipeline.input_tree())]
        t = pipeline.transform
        self._transform = TransformRef(executor=t.executor, cmd=t.cmd or [], image=t.image,
                                       module=t.resolved_module(base_dir), entrypoint=t.entrypoint,
                                       fuel=t.fuel, stdin=t.stdin, env=t.env)
        r = pipeline.resources
        self._resources = ResourceAsk(cpu=r.cpu, memory=r.memory, disk=r.disk, gpu=r.gpu)

    def request(self, shard: Shard, attempt: int) -> ShardRequest:
        # Built from values already checked (the spec, the plan): not validated again, which cost
        # ~2 µs a datum per attempt (issue 13). The datums are the shard's own list, never changed.
        return ShardRequest.model_construct(
            job_id=self.job.id, pipeline=self.pipeline.name, shard_index=shard.index, shard_id=shard.id,
            shard_count=len(self.shards), attempt=attempt, transform=self._transform, inputs=self._inputs,
            datums=shard.datums_json, resources=self._resources,
            network=self.pipeline.network, timeout=self.pipeline.timeout, providers=[],
        )

    async def dispatch(self, requester: Requester, index: int) -> ShardResult:
        """Run one attempt of shard `index` and return its completed result. Raises ShardFailed
        for a failed attempt, ShardCancelled once the job is cancelled (`cancel`)."""
        shard = self.shards[index]
        if self.cancelled is not None:
            raise ShardCancelled(self.cancelled)
        if index in self._hopeless:  # Prefect retries everything; there is nothing to retry here
            raise ShardFailed(self._hopeless[index], retry=False)
        attempt = self.jobs.start_attempt(self.job.id, index)
        self._requester = requester
        self.on_progress(index, "running")
        request = self.request(shard, attempt)
        last_attempt = attempt - self._earlier.get(index, 0) > self.pipeline.retries
        tried = self._tried.setdefault(index, set())

        def accepted_by(node: str) -> None:
            tried.add(node)
            self.jobs.assign_node(self.job.id, index, attempt, node)

        running = asyncio.ensure_future(requester.run(request, self.pipeline.selector, avoid=tried,
                                                      on_node=accepted_by, secrets=self._secrets))
        self._in_flight[index] = running
        try:
            result = await running
        except NoNodeCanRun as e:
            why = f"bflow: {e}\n" + (f"bflow: hint: {e.hint}\n" if e.hint else "")  # what `bflow logs` shows
            self._record(ShardResult(job_id=self.job.id, shard_index=index, shard_id=shard.id, attempt=attempt,
                                     node="", state="failed", error=str(e), stdout_cid=self.content.put_bytes(b""),
                                     stderr_cid=self.content.put_bytes(why.encode())), final=True)
            self._hopeless[index] = f"shard {index}: {e}"
            raise ShardFailed(self._hopeless[index], retry=False) from None
        except asyncio.CancelledError:
            self.jobs.cancel_unfinished_shards(self.job.id)
            if self.cancelled is not None and not asyncio.current_task().cancelling():
                self.on_progress(index, "cancelled")
                raise ShardCancelled(self.cancelled) from None  # `cancel` stopped this attempt alone
            raise
        finally:
            self._in_flight.pop(index, None)
        self._record(result, final=result.state == "completed" or last_attempt)
        if result.state != "completed":
            raise ShardFailed(f"shard {index} failed on node {result.node}: {result.error}", result=result)
        return result

    def cancel(self, reason: str) -> None:
        """Stop the job: cancel its in-flight attempts, mark it and its unfinished shards
        cancelled; later dispatches raise ShardCancelled. Call it on the task runner's loop."""
        if self.cancelled is not None or self.finished:
            return
        self.cancelled = reason
        for running in list(self._in_flight.values()):
            running.cancel()
        self.jobs.cancel_unfinished_shards(self.job.id)
        self.jobs.set_job(self.job.id, state="cancelled", error=reason)

    def _record(self, result: ShardResult, final: bool) -> None:
        self.jobs.finish_attempt(
            self.job.id, result.shard_index, result.attempt, state=result.state, node=result.node or None,
            exit_code=result.exit_code, cid=result.outputs_cid, stdout_cid=result.stdout_cid,
            stderr_cid=result.stderr_cid, error=result.error, started=result.started, ended=result.ended,
            final=final,
        )
        self.on_progress(result.shard_index, result.state if final else "retrying")

    def record(self) -> JobRecord:
        """The job as the store has it now, each shard's datums taken from this run's plan
        rather than parsed again from the store (~35 ms a read for 10^4 datums). Read-only."""
        job = self.jobs.get(self.job.id, with_shards=False)
        job.shards = self.jobs.shard_outcomes(self.job.id)
        for shard in job.shards:
            shard.datums = self.shards[shard.index].datums_json
        return job

    def finish(self) -> JobRecord:
        """Merge what completed and set the job's final state. Returns the updated record (its
        shards' datums from the plan, as `record` has them)."""
        self.finished = True
        job = self.record()
        failed = [s for s in job.shards if s.state not in ("completed", "skipped")]  # skipped: reused success
        error = None
        try:
            cid = merge_outputs(self.content, job.shards, self.pipeline.output.conflict, self.scratch)
        except OutputConflict as e:
            cid, error = None, f"{e}; {e.hint}" if e.hint else str(e)  # the job's error is all the user sees
        if failed and error is None:
            first = failed[0]
            error = (f"{len(failed)} of {len(job.shards)} shard{'s' if len(job.shards) != 1 else ''} failed; "
                     f"first: shard {first.index}: {first.error}")
        published = None
        if error is None and (url := publish_url(self.pipeline, job.id)):  # only a completed job
            try:
                publish_outputs(self.content, cid, url)
                published = url
            except PublishError as e:
                error = str(e)  # the outputs stay in the content store under `cid`
        dropped = self._requester.dropped.get(job.id, 0) if self._requester else 0
        self.jobs.set_job(job.id, state="failed" if error else "completed", cid=cid, error=error,
                          published=published, dropped=dropped)
        done = self.jobs.get(job.id, with_shards=False)
        done.shards = job.shards  # their outcomes were final before the merge
        self.ended = done
        return done


def content_keys(pipeline: Pipeline, shards: list[Shard], jobs: JobStore) -> tuple[str | None, list[str | None]]:
    """(transform key, each shard's content key), computed on the requester before the job is
    recorded; see jobs/content_key.py for what they cover."""
    from ..jobs.content_key import ContentKeys

    keys = ContentKeys(pipeline, jobs)
    return keys.transform, keys.keys(shards)


def reuse_results(pipeline: Pipeline, job: JobRecord, jobs: JobStore, content: ContentStore, *,
                  reprocess: bool = False) -> dict[int, ShardRecord]:
    """Mark the shards of `job` whose content key already succeeded in an earlier job of the
    same pipeline as skipped, with that result; return them by index. Nothing is reused under
    `reprocess: always` or with `reprocess=True` (`bflow run --reprocess`), nor a result whose
    blocks this machine's content store no longer holds."""
    if reprocess or pipeline.reprocess == "always":
        return {}
    keys = [s.content_key for s in job.shards]
    earlier = jobs.reusable(pipeline.name, [k for k in keys if k], exclude_job=job.id)
    reused: dict[int, ShardRecord] = {}
    for shard in job.shards:
        found = earlier.get(shard.content_key) if shard.content_key else None
        if found and all(cid is None or content.has(cid) for cid in (found.cid, found.stdout_cid, found.stderr_cid)):
            reused[shard.index] = found
    if reused:
        jobs.mark_skipped(job.id, reused)
    return reused
