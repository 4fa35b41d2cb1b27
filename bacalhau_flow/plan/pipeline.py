"""Plan one pipeline: its input's datums cut into shards."""

from __future__ import annotations

from dataclasses import dataclass, field

from .datum import Shard, cut_into_shards
from .datums import plan_datums
from .inputs import open_input


@dataclass
class PipelinePlan:
    pipeline: str
    shards: list[Shard]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"name": self.pipeline, "shards": [s.to_json() for s in self.shards]}


def plan_pipeline(pipeline) -> PipelinePlan:
    """Glob the pipeline's input and cut its datums into shards.
    Raises InputNotFound / InputUnreachable / PlanError for inputs that cannot be listed."""
    spec_input = pipeline.input
    url = spec_input.resolved_url(pipeline.base_dir)
    root = open_input(url)
    datums = plan_datums(spec_input.name, root, spec_input.glob, spec_input.exclude)
    shards = cut_into_shards(pipeline.name, datums, spec_input.batch_size)
    warnings = []
    if not shards:
        warnings.append(
            f"{pipeline.name}: glob {spec_input.glob!r} matched nothing in {url}; the job has 0 shards"
        )
    return PipelinePlan(pipeline.name, shards, warnings)
