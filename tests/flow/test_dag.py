"""The pipelines of one file as a DAG: order, downstreams, and plans of stages that wait."""

import pytest

from bacalhau_flow.errors import PlanError
from bacalhau_flow.flow.dag import build_dag, plan_dag
from bacalhau_flow.plan.pipeline import plan_pipeline
from bacalhau_flow.spec import load_spec_text

SPEC = """\
pipeline: reduce
input: {url: 'pipeline://process'}
transform: {cmd: ['true']}
---
pipeline: process
input: {url: 'pipeline://split', glob: '/*'}
transform: {cmd: ['true']}
---
pipeline: split
input: {url: data}
transform: {cmd: ['true']}
---
pipeline: alone
input: {url: data}
transform: {cmd: ['true']}
"""


@pytest.fixture
def dag(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    return build_dag(load_spec_text(SPEC, base_dir=tmp_path))


def test_upstreams_come_first_and_independent_pipelines_keep_file_order(dag):
    assert [p.name for p in dag.pipelines] == ["split", "alone", "process", "reduce"]
    assert dag.earlier == {}
    assert dag.downstream_of("split") == {"process", "reduce"} and dag.downstream_of("alone") == set()


def test_a_stage_that_reads_a_pipeline_of_the_file_is_planned_after_it(dag):
    plans = {p.pipeline: p for p in plan_dag(dag)}
    assert plans["process"].after == ["split"] and plans["process"].shards == []
    assert plans["process"].to_json() == {"name": "process", "shards": [], "planned_after": ["split"]}
    assert len(plans["split"].shards) == 1 and "planned_after" not in plans["split"].to_json()


def test_planning_an_unresolved_pipeline_url_is_a_clear_error(dag):
    process = next(p for p in dag.pipelines if p.name == "process")
    with pytest.raises(PlanError, match="pipeline://split is not resolved"):
        plan_pipeline(process)
