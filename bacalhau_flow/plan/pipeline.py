"""Plan one pipeline: its input's datums cut into shards."""

from __future__ import annotations

from dataclasses import dataclass, field

from .combinators import Leaf, plan_input_tree
from .datum import Shard, cut_into_shards


@dataclass
class PipelinePlan:
    pipeline: str
    shards: list[Shard]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"name": self.pipeline, "shards": [s.to_json() for s in self.shards]}


def plan_pipeline(pipeline) -> PipelinePlan:
    """Glob the pipeline's input (one input, or a tree of combined inputs) and cut its datums
    into shards. Raises InputNotFound / InputUnreachable / PlanError for inputs that cannot be listed."""
    tree = pipeline.input_tree()
    datums = plan_input_tree(tree)
    shards = cut_into_shards(pipeline.name, datums, pipeline.input.batch_size, keep_order=True)
    warnings = []
    if not shards:
        what = (f"glob {tree.glob!r} matched nothing in {tree.url}" if isinstance(tree, Leaf)
                else f"the {pipeline.input.keyword} input gives no datums")
        warnings.append(f"{pipeline.name}: {what}; the job has 0 shards")
    return PipelinePlan(pipeline.name, shards, warnings)
