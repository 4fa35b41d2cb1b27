"""Run a pipeline as a job: plan, record, compile to a Prefect flow, run, finish.

The job store is the record of truth; a Ctrl-C marks the job cancelled and every unfinished
shard cancelled, so nothing half-done reads as done (flow/interrupt.py: how, and within what
time). The job is owned by this process while it runs (jobs/owner.py): killed instead, it
reads `interrupted`, and `bflow resume` continues it (flow/resume.py).

`run_dag` runs the pipelines of one file (flow/dag.py): a pipeline once those it reads
completed, independent ones at the same time. Each runs in a thread of its own when several
are ready (one Prefect flow run each: Prefect's engine, the job store and the content store
are safe to share between threads); a pipeline that is ready alone runs in the calling
thread, so Ctrl-C reaches it as it reaches a single pipeline. A file of several pipelines is
one parent flow run holding its jobs' flow runs (flow/chain.py); its threads start with a
copy of the caller's context, so they find that parent.
"""

from __future__ import annotations

import contextvars
import json
import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager

from ..errors import BflowError, JobCancelled, JobNotFound
from ..home import bflow_home, jobs_db, store_root
from ..jobs.publish import check_publish_url
from ..jobs.store import JobRecord, JobStore
from ..network.secrets import read_secrets
from ..plan.pipeline import PipelinePlan, plan_pipeline
from ..spec import Pipeline
from ..storage import ContentStore
from ..transports.redact import redacted
from . import interrupt
from .dag import NOT_RUN, PipelineDag, UpstreamOutput


def cancelled_error(job_id: str) -> JobCancelled:
    """What a job stopped by Ctrl-C raises: one line, saying where to look."""
    return JobCancelled(f"job {job_id} cancelled by the user; `bflow describe {job_id[:10]}` shows what ran")


def run_pipeline(
    pipeline: Pipeline,
    *,
    plan: PipelinePlan | None = None,
    network: str | None = None,
    nodes: int = 3,
    job_id: str | None = None,
    on_progress: Callable[[int, str], None] | None = None,
    reprocess: bool = False,
    upstreams: list | None = None,
) -> JobRecord:
    """Run one pipeline to its end and return its job record (completed or failed); a job
    that completed is published to `output.publish` (jobs/publish.py) before it reads so.
    Raises JobCancelled on Ctrl-C, PlanError for inputs that cannot be listed, PublishError
    (before anything runs) for a publish url whose protocol is not installed here.

    Shards whose content key already succeeded are reused (skipped) unless `reprocess` or the
    spec's `reprocess: always`; a job with nothing left to run finishes without a flow run.
    `upstreams` (flow/dag.py `UpstreamOutput`s, the pipeline already resolved to them) are
    recorded on the job: which jobs and CIDs its pipeline:// inputs read."""
    with interrupt.watching():
        return _run_pipeline(pipeline, plan=plan, network=network, nodes=nodes, job_id=job_id,
                             on_progress=on_progress, reprocess=reprocess, upstreams=upstreams)


def _run_pipeline(pipeline: Pipeline, *, plan, network, nodes, job_id, on_progress, reprocess, upstreams) -> JobRecord:
    """`run_pipeline`'s body, with Ctrl-C handled (flow/interrupt.py)."""
    from .prefect_api import prefect_ready, use_prefect

    check_publish_url(pipeline)
    use_prefect(wait=False)  # a managed server that has to start comes up while Prefect is imported
    from .compile import compile_flow

    prefect_ready()
    secrets = read_secrets(pipeline.transform.secrets, pipeline.base_dir)  # before any job is recorded
    plan = plan or plan_pipeline(pipeline)
    jobs = JobStore(jobs_db())
    content = ContentStore(store_root())
    from .job_run import content_keys, reuse_results

    transform_key, keys = content_keys(pipeline, plan.shards, jobs)
    job = jobs.create_job(
        pipeline.name,
        [(s.index, s.id, s.datums_json) for s in plan.shards],
        spec_file=pipeline.source_file,
        conflict=pipeline.output.conflict,
        job_id=job_id,
        transform_key=transform_key,
        content_keys=keys,
        network=redacted(network),
    )
    if upstreams:
        jobs.set_job(job.id, upstreams=json.dumps([u.to_json() for u in upstreams]))
    reused = reuse_results(pipeline, job, jobs, content, reprocess=reprocess)
    job = jobs.get(job.id) if reused else job

    from .job_run import JobRun

    run = JobRun(pipeline, plan.shards, job, jobs, content, bflow_home() / "scratch", on_progress,
                 pending=[i for i in range(len(plan.shards)) if i not in reused], secrets=secrets)
    for index in reused:
        run.on_progress(index, "skipped")
    try:
        if interrupt.requested():  # Ctrl-C while this job was being set up: nothing dispatched
            raise KeyboardInterrupt
        if reused and not run.pending:  # nothing changed: no flow run, no network
            jobs.set_job(job.id, state="running")
            state = run.finish()
        else:
            state = compile_flow(run, network, nodes)(return_state=True)
    except KeyboardInterrupt:
        jobs.cancel_unfinished_shards(job.id)
        jobs.set_job(job.id, state="cancelled", error="cancelled by the user")
        raise cancelled_error(job.id) from None
    except BflowError as e:  # before the first shard: an unreachable network, say. Never left queued.
        jobs.cancel_unfinished_shards(job.id)
        jobs.set_job(job.id, state="failed", error=str(e))
        raise
    record = run.ended or run.record()  # as `finish` left it: not read again (~6 ms for 1000 shards)
    if record.state in ("queued", "running"):
        # The flow ended without finishing the job (a crash in Prefect or in our code).
        message = getattr(state, "message", None) or "the flow run crashed"
        jobs.cancel_unfinished_shards(job.id)
        jobs.set_job(job.id, state="failed", error=message)
        record = jobs.get(job.id)
    if getattr(state, "is_cancelled", lambda: False)() and record.state != "cancelled":
        jobs.set_job(job.id, state="cancelled")
        record = jobs.get(job.id)
    jobs.close()
    return record


# --- the pipelines of one file: a DAG (flow/dag.py) ----------------------------------------

ProgressFor = Callable[[str, int], AbstractContextManager[Callable[[int, str], None]]]


def run_dag(
    dag: PipelineDag,
    *,
    plans: dict[str, PipelinePlan] | None = None,
    job_ids: dict[str, str] | None = None,
    progress_for: ProgressFor | None = None,
    warn: Callable[[str], None] | None = None,
    plan_nodes: list | None = None,
    **options,
) -> list[JobRecord]:
    """Run every pipeline of `dag`: each once the pipelines it reads completed, those that are
    ready together in threads of their own. Returns the job records in `dag` order.

    A pipeline whose upstream did not complete does not run: it gets a cancelled job of no
    shards whose error says why (`not run: upstream split failed`). `plans` are plans made
    already (the pipelines that read no other pipeline of the file); `progress_for(name,
    shards)` gives a context for one job's progress hook; `warn` gets the warnings of the
    plans made here, `plan_nodes` the nodes their `batch_size: auto` counts (None: the embedded
    network's); `options` go to `run_pipeline`.
    Raises JobCancelled on Ctrl-C (the jobs still running are marked cancelled)."""
    from ..jobs.store import new_job_id

    plans, ids = dict(plans or {}), dict(job_ids or {})
    for pipeline in dag.pipelines:
        ids.setdefault(pipeline.name, new_job_id())
    with interrupt.watching():
        if len(dag.pipelines) == 1:
            return _run_dag(dag, plans, ids, progress_for, warn, plan_nodes, options)
        from .prefect_api import use_prefect

        use_prefect(wait=False)  # as_one_flow_run waits for it, once Prefect is imported
        from .chain import as_one_flow_run

        return as_one_flow_run(dag, ids[dag.pipelines[0].name], options.get("network"),
                               lambda: _run_dag(dag, plans, ids, progress_for, warn, plan_nodes, options))


def _run_dag(dag: PipelineDag, plans: dict[str, PipelinePlan], ids: dict[str, str],
             progress_for: ProgressFor | None, warn: Callable[[str], None] | None, plan_nodes: list | None,
             options: dict) -> list[JobRecord]:
    """`run_dag`'s body, in the caller's flow run context (if any); raises as `run_dag`."""
    results: dict[str, JobRecord] = {}
    why_not: dict[str, str] = {}  # pipelines that did not run -> the reason
    outputs: dict[str, UpstreamOutput] = {}
    finished: queue.Queue = queue.Queue()
    waiting, running = list(dag.pipelines), set()
    stopped: list[str] = []  # pipelines whose jobs Ctrl-C stopped

    def stage(pipeline: Pipeline) -> JobRecord:
        upstreams = dag.resolve(pipeline, outputs)
        plan = plans.get(pipeline.name)
        if plan is None:
            plan = plan_pipeline(pipeline, plan_nodes)
            for warning in plan.warnings:
                (warn or (lambda w: None))(warning)
        with (progress_for or _no_progress)(pipeline.name, len(plan.shards)) as hook:
            return run_pipeline(pipeline, plan=plan, job_id=ids[pipeline.name], on_progress=hook,
                                upstreams=upstreams, **options)

    def settle(pipeline: Pipeline, record: JobRecord) -> None:
        results[pipeline.name] = record
        if record.state == "completed" and record.cid:
            outputs[pipeline.name] = UpstreamOutput(pipeline.name, record.id, record.cid)

    def in_thread(pipeline: Pipeline) -> None:
        try:
            finished.put((pipeline, stage(pipeline), None))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
            finished.put((pipeline, None, e))

    try:
        while waiting or running:
            if interrupt.requested():  # Ctrl-C: no pipeline starts after it
                raise JobCancelled("cancelled")
            for pipeline in list(waiting):  # in dependency order: upstreams are decided first
                reason = _not_run_reason(dag.after(pipeline), results, why_not)
                if reason is not None:
                    waiting.remove(pipeline)
                    why_not[pipeline.name] = reason
                    results[pipeline.name] = _record_not_run(pipeline, ids[pipeline.name], reason)
            ready = [p for p in waiting if all(u in results for u in dag.after(p))]
            for pipeline in ready:
                waiting.remove(pipeline)
            if len(ready) == 1 and not running:  # alone: in this thread, as a single pipeline runs
                settle(ready[0], _stage_or_failed(stage, ready[0], ids, several=len(dag.pipelines) > 1))
                continue
            for pipeline in ready:
                running.add(pipeline.name)
                threading.Thread(target=contextvars.copy_context().run, args=(in_thread, pipeline), daemon=True,
                                 name=f"bflow-{pipeline.name}").start()
            if running:
                pipeline, record, error = interrupt.next_item(finished)
                running.discard(pipeline.name)
                if isinstance(error, BflowError) and not isinstance(error, JobCancelled):
                    record = _record_failed(pipeline, ids[pipeline.name], error)
                elif error is not None:
                    if isinstance(error, JobCancelled):
                        stopped.append(pipeline.name)
                    raise error
                settle(pipeline, record)
    except (KeyboardInterrupt, JobCancelled) as e:
        stopped += sorted(running)
        _stop_threads(running, ids, finished)
        _cancel_running(ids[name] for name in running)
        if len(stopped) <= 1 and isinstance(e, JobCancelled) and str(e) != "cancelled":
            raise  # one job stopped: its own line
        names = ", ".join(f"{name} (job {ids[name][:10]})" for name in stopped) or "no job had started"
        raise JobCancelled(f"cancelled by the user: {names}; `bflow list` shows the jobs") from None
    return [results[p.name] for p in dag.pipelines]


@contextmanager
def _no_progress(name: str, shards: int):
    yield None


def _not_run_reason(upstreams: list[str], results: dict[str, JobRecord], why_not: dict[str, str]) -> str | None:
    """Why a pipeline must not run: an upstream that ended without completing (or did not run)."""
    for name in upstreams:
        if name in why_not:
            return why_not[name]
        record = results.get(name)
        if record is not None and record.state != "completed":
            return f"upstream {name} {'was cancelled' if record.state == 'cancelled' else record.state}"
    return None


def _stage_or_failed(stage, pipeline: Pipeline, ids: dict[str, str], several: bool) -> JobRecord:
    """`stage(pipeline)`; in a file of several pipelines, an error before its job ran (a
    downstream's input that cannot be listed) becomes a failed job, so the rest still runs."""
    try:
        return stage(pipeline)
    except JobCancelled:
        raise
    except BflowError as e:
        if not several:
            raise
        return _record_failed(pipeline, ids[pipeline.name], e)


def _record_not_run(pipeline: Pipeline, job_id: str, reason: str) -> JobRecord:
    return _record_ended(pipeline, job_id, "cancelled", NOT_RUN + reason)


def _record_failed(pipeline: Pipeline, job_id: str, error: BflowError) -> JobRecord:
    return _record_ended(pipeline, job_id, "failed", str(error))


def _record_ended(pipeline: Pipeline, job_id: str, state: str, error: str) -> JobRecord:
    """A job of no shards that ended in `state` before anything ran (or the job as it is, if
    `run_pipeline` had created it already)."""
    jobs = JobStore(jobs_db())
    try:
        try:
            jobs.resolve(job_id)
        except JobNotFound:
            jobs.create_job(pipeline.name, [], spec_file=pipeline.source_file, conflict=pipeline.output.conflict,
                            job_id=job_id)
            jobs.set_job(job_id, state=state, error=error)
        return jobs.get(job_id)
    finally:
        jobs.close()


def _stop_threads(running: set[str], ids: dict[str, str], finished: queue.Queue, timeout: float = 30.0) -> None:
    """Stop the jobs of the pipelines running in threads (their shards' commands are killed,
    as Cancel in the UI does: flow/compile.py `stop_job`) and wait for those threads, at most
    `timeout` s; a second Ctrl-C stops waiting."""
    import time

    from .compile import stop_job

    stopping = {name for name in running if stop_job(ids[name], "cancelled by the user")}
    deadline = time.monotonic() + timeout
    try:
        while stopping and (left := deadline - time.monotonic()) > 0:
            pipeline, _record, _error = finished.get(timeout=left)
            stopping.discard(pipeline.name)
    except (queue.Empty, KeyboardInterrupt):
        pass


def _cancel_running(job_ids) -> None:
    jobs = JobStore(jobs_db())
    try:
        for job_id in job_ids:
            try:
                jobs.resolve(job_id)
            except JobNotFound:
                continue
            jobs.cancel_unfinished_shards(job_id)
            jobs.set_job(job_id, state="cancelled", error="cancelled by the user")
    finally:
        jobs.close()
