"""The Python API: load a spec and run its pipelines from Python, as `bflow run` does.

    from bacalhau_flow import run, load, JobFailed

    job = run("pipelines/wordcount.yaml")     # a JobRecord: job.state, job.cid, job.shards
    print(job.id, job.cid)

Each pipeline runs as its own Prefect flow run (named by the job id). Called inside a user's
own `@flow`, that run is a subflow of the user's flow, and a job that did not complete raises
JobFailed there, so the user's flow ends Failed. Imported lazily by `bacalhau_flow.__init__`,
so `import bacalhau_flow` stays cheap; Prefect is imported only when `run` runs something.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Union

from .errors import JobFailed, SpecError
from .jobs.store import JobRecord
from .spec import Pipeline, load_spec, load_spec_text

__all__ = ["JobFailed", "load", "run"]

log = logging.getLogger("bacalhau_flow")

Spec = Union[str, Path, Pipeline, Sequence[Pipeline]]


def load(spec_or_path: str | Path) -> list[Pipeline]:
    """The pipelines of a spec, in file order: `spec_or_path` is the path of a YAML file (str or
    Path), or YAML text (a str that contains a newline or starts with "pipeline:"; relative
    input urls in text are resolved against the current directory). Raises SpecError for a
    file that does not exist or a spec that is not valid (file:line:column: field: message)."""
    if isinstance(spec_or_path, str) and _is_yaml_text(spec_or_path):
        return load_spec_text(spec_or_path)
    return load_spec(spec_or_path)


def run(spec_or_path: Spec, network: str | None = None, reprocess: bool = False,
        raise_on_failure: bool = True) -> JobRecord | list[JobRecord]:
    """Run every pipeline of a spec to its end, as `bflow run` does: upstreams first,
    independent pipelines at the same time, each as a Prefect flow run.

    `spec_or_path`: a path, YAML text (see `load`), a Pipeline, or a list of Pipelines.
    `network`: a network URL (`nats://...`); None runs on an embedded network of 3 nodes.
    `reprocess`: run every shard, reusing no earlier result (`bflow run --reprocess`).

    Returns the JobRecord of the job (`.state`, `.cid`, `.shards`, `.error`) when the spec has
    one pipeline, else a list of JobRecords in dependency order. With `raise_on_failure` (the
    default), a job that did not complete raises JobFailed (`.job`: the first such record,
    `.jobs`: all of them); without it, failed records are returned like the others.
    Raises SpecError for a spec that is not valid, PlanError for inputs that cannot be
    listed (before anything runs), JobCancelled on Ctrl-C."""
    from .flow.dag import build_dag, plan_dag
    from .flow.runner import run_dag
    from .network.census import nodes_for_auto_batches

    pipelines = _pipelines(spec_or_path)
    dag = build_dag(pipelines)
    plan_nodes = nodes_for_auto_batches(pipelines, network)
    plans = plan_dag(dag, plan_nodes)  # every input not read from a pipeline of this spec is listed before anything runs
    for plan in plans:
        for warning in plan.warnings:
            log.warning(warning)
    records = run_dag(dag, plans={p.pipeline: p for p in plans if not p.after}, warn=log.warning,
                      plan_nodes=plan_nodes, network=network, reprocess=reprocess)
    failed = [r for r in records if r.state != "completed"]
    if failed and raise_on_failure:
        first = failed[0]
        raise JobFailed(f"job {first.id} ({first.pipeline}) {first.state}: {first.error or 'no error recorded'}",
                        job=first, jobs=records,
                        hint=f"`bflow describe {first.id[:10]}` shows its shards, "
                             f"`bflow logs {first.id[:10]} --shard N` their logs")
    return records[0] if len(records) == 1 else records


def _pipelines(spec: Spec) -> list[Pipeline]:
    if isinstance(spec, Pipeline):
        return [spec]
    if isinstance(spec, (str, Path)):
        return load(spec)
    pipelines = list(spec)
    if not pipelines or not all(isinstance(p, Pipeline) for p in pipelines):
        raise SpecError("expected a spec path, YAML text, a Pipeline or a non-empty list of Pipelines")
    names = [p.name for p in pipelines]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise SpecError(f"duplicate pipeline name {', '.join(map(repr, twice))}",
                        hint="give each pipeline its own name")
    return pipelines


def _is_yaml_text(text: str) -> bool:
    return "\n" in text or text.lstrip().startswith("pipeline:")
