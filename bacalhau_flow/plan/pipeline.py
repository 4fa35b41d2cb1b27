"""Plan one pipeline: its input's datums cut into shards."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import PlanError
from .batching import BatchChoice, choose
from .combinators import Leaf, leaves, plan_input_tree
from .datum import Shard, cut_into_shards


@dataclass
class PipelinePlan:
    pipeline: str
    shards: list[Shard]
    warnings: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)  # planned once these pipelines of its file ran
    batch: BatchChoice | None = None  # what `batch_size: auto` chose (plan/batching.py)

    def to_json(self) -> dict:
        shown = {"name": self.pipeline, "shards": [s.to_json() for s in self.shards]}
        if self.batch is not None:
            shown["batch_size"] = self.batch.batch_size
            shown["batch_size_auto"] = self.batch.to_json()
        return {**shown, "planned_after": self.after} if self.after else shown


def plan_pipeline(pipeline, nodes: list | None = None) -> PipelinePlan:
    """Glob the pipeline's input (one input, or a tree of combined inputs) and cut its datums
    into shards. `batch_size: auto` is chosen for `nodes` (a network's `NodeInfo`s; None: the
    embedded network, plan/batching.py). Raises InputNotFound / InputUnreachable / PlanError for
    inputs that cannot be listed."""
    tree = pipeline.input_tree()
    unresolved = sorted({leaf.url for leaf in leaves(tree) if leaf.url.startswith("pipeline://")})
    if unresolved:
        raise PlanError(f"{pipeline.name}: {', '.join(unresolved)} is not resolved to an output yet",
                        hint="pipeline:// inputs are read from the upstream's latest completed job: plan "
                             "and run them with `bflow plan` / `bflow run` (flow/dag.py resolves them)")
    datums = plan_input_tree(tree)
    batch = choose(len(datums), pipeline, nodes) if pipeline.input.batch_size == "auto" else None
    size = batch.batch_size if batch is not None else pipeline.input.batch_size
    shards = cut_into_shards(pipeline.name, datums, size, keep_order=True)
    warnings = []
    if not shards:
        what = (f"glob {tree.glob!r} matched nothing in {tree.url}" if isinstance(tree, Leaf)
                else f"the {pipeline.input.keyword} input gives no datums")
        warnings.append(f"{pipeline.name}: {what}; the job has 0 shards")
    return PipelinePlan(pipeline.name, shards, warnings, batch=batch)
