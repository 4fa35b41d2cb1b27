"""The pipelines of one spec file as a DAG: its edges are `pipeline://NAME` inputs.

A `pipeline://NAME[/path]` input reads the merged output of pipeline NAME's latest
completed job, as `ipfs://CID[/path]` (this machine's content store first, then gateways:
storage/ipfs_fs.py). Where NAME is in the same file, the edge orders the run: NAME runs
first, and its output is read as soon as it completed. Where it is not, NAME must have
completed here before (`bflow run` of another file); the CID is taken when the file is
planned.

Decisions:

- Resolution happens at planning time, never on a node: the shard request names the
  `ipfs://CID` url, so nodes see content addresses only, and the job record names the
  upstream job and CID it read (`JobRecord.upstreams`, `bflow describe`).
- Datum paths are relative to the upstream's output root, never to its CID, and the input
  name defaults to the upstream's name: a new upstream output with unchanged parts keeps the
  downstream's shard ids (what reprocessing keys on).
- An unknown upstream (not in the file, never completed here) and a cycle are SpecErrors
  located at the url (exit 2), from `bflow validate`, `plan` and `run` alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import Pipeline


@dataclass(frozen=True)
class UpstreamOutput:
    """What one pipeline:// input reads: the output CID of a completed job of `pipeline`."""

    pipeline: str
    job: str
    cid: str

    @property
    def url(self) -> str:
        return f"ipfs://{self.cid}"

    def to_json(self) -> dict:
        return {"pipeline": self.pipeline, "job": self.job, "cid": self.cid}


@dataclass
class PipelineDag:
    """The pipelines of one file in dependency order, and the outputs of the pipelines they
    read that are not in the file (`earlier`, by name)."""

    pipelines: list[Pipeline]  # upstreams before their downstreams; otherwise file order
    earlier: dict[str, UpstreamOutput]

    def __post_init__(self) -> None:
        self.pipelines = _in_dependency_order(self.pipelines)

    @property
    def names(self) -> set[str]:
        return {p.name for p in self.pipelines}

    def after(self, pipeline: Pipeline) -> list[str]:
        """The pipelines of this file that `pipeline` reads, sorted: it runs after them."""
        return sorted(pipeline.upstreams & self.names)

    def downstream_of(self, name: str) -> set[str]:
        """Every pipeline of this file that reads `name`'s output, directly or not."""
        found: set[str] = set()
        frontier = {name}
        while frontier:
            frontier = {p.name for p in self.pipelines if p.upstreams & frontier} - found
            found |= frontier
        return found

    def resolve(self, pipeline: Pipeline, done: dict[str, UpstreamOutput]) -> list[UpstreamOutput]:
        """Point `pipeline`'s pipeline:// inputs at the outputs they read, from `done` (outputs
        of this file's pipelines, by name) or `earlier`; returns those outputs, sorted by name.
        Every upstream must be in one of them."""
        outputs = {name: done.get(name) or self.earlier[name] for name in sorted(pipeline.upstreams)}
        pipeline.resolve_upstreams({name: out.url for name, out in outputs.items()})
        return list(outputs.values())


def build_dag(pipelines: list[Pipeline]) -> PipelineDag:
    """The DAG of one file's pipelines (cycles were refused by the loader). Reads the job
    store for upstreams that are not in the file; raises a located SpecError for one that
    never completed here."""
    names = {p.name for p in pipelines}
    outside = [ref for p in pipelines for ref in p.references if ref.upstream not in names]
    outside += [_unlocated(p, name) for p in pipelines if not p.references
                for name in sorted(p.upstreams - names)]  # built in code: no locations
    earlier: dict[str, UpstreamOutput] = {}
    if outside:
        from ..home import jobs_db
        from ..jobs.store import JobStore

        store = JobStore(jobs_db()) if jobs_db().exists() else None
        try:
            for ref in outside:
                if ref.upstream not in earlier:
                    earlier[ref.upstream] = _latest_output(store, ref, names)
        finally:
            if store is not None:
                store.close()
    return PipelineDag(list(pipelines), earlier)


def _latest_output(store, ref, names: set[str]) -> UpstreamOutput:
    """The output of `ref.upstream`'s latest completed job; a located SpecError if none."""
    name = ref.upstream
    job = store.latest_job(name, "completed") if store is not None else None
    if job is not None and job.cid:
        return UpstreamOutput(name, job.id, job.cid)
    latest = store.latest_job(name) if store is not None else None
    if latest is not None:
        raise ref.error(f"pipeline {name!r} has no completed run to read from (its latest job "
                        f"{latest.id} is {latest.state})",
                        hint=f"run it until it completes first (`bflow describe {latest.id[:10]}` shows "
                             "what went wrong), or define it in this file")
    in_file = f"; this file has {', '.join(sorted(names))}"
    raise ref.error(f"unknown pipeline {name!r}: it is not in this file and has never run here{in_file}",
                    hint=f"run the spec that defines {name!r} first (`bflow run THAT.yaml`), or add it to "
                         "this file, which then runs it before the pipelines that read it")


@dataclass(frozen=True)
class _Unlocated:
    """A pipeline:// reference of a pipeline built in code (no spec file to point into)."""

    upstream: str
    field: str

    def error(self, message: str, hint: str | None = None):
        from ..errors import SpecError

        return SpecError(message, field=self.field, hint=hint)


def _unlocated(pipeline: Pipeline, name: str) -> _Unlocated:
    return _Unlocated(name, f"{pipeline.name}.input")


def _in_dependency_order(pipelines: list[Pipeline]) -> list[Pipeline]:
    """Upstreams first, otherwise the file's order (cycles were refused by the loader)."""
    names = {p.name for p in pipelines}
    placed: set[str] = set()
    ordered: list[Pipeline] = []
    while len(ordered) < len(pipelines):
        ready = [p for p in pipelines if p.name not in placed and (p.upstreams & names) <= placed]
        if not ready:  # a cycle built in code: the loader refuses these in files
            from ..errors import SpecError

            stuck = sorted(names - placed)
            raise SpecError(f"pipelines read each other's outputs in a cycle: {', '.join(stuck)}")
        ordered += ready
        placed |= {p.name for p in ready}
    return ordered


def plan_dag(dag: PipelineDag, nodes: list | None = None) -> list:
    """A `PipelinePlan` per pipeline, in dag order. One that reads a pipeline of this file is
    planned once that has run: its plan has no shards and names it in `after`; the others
    read the outputs of earlier runs (`dag.earlier`). `batch_size: auto` counts `nodes` (a
    network's `NodeInfo`s; None: the embedded network). Raises PlanErrors as `plan_pipeline`."""
    from ..plan.pipeline import PipelinePlan, plan_pipeline

    plans = []
    for pipeline in dag.pipelines:
        after = dag.after(pipeline)
        if after:
            plans.append(PipelinePlan(pipeline.name, [], after=after))
        else:
            dag.resolve(pipeline, {})
            plans.append(plan_pipeline(pipeline, nodes))
    return plans


def not_run_reason(record) -> str | None:
    """Why a job of a DAG did not run (`upstream split failed`), or None for one that ran."""
    error = record.error or ""
    if record.state == "cancelled" and not record.shard_count and error.startswith(NOT_RUN):
        return error[len(NOT_RUN):]
    return None


NOT_RUN = "not run: "
