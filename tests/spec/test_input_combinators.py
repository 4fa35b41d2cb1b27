"""Input combinators in the spec: YAML shapes, located errors, and planning them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bacalhau_flow.errors import SpecError
from bacalhau_flow.flow.job_run import JobRun
from bacalhau_flow.jobs.store import JobRecord
from bacalhau_flow.plan.combinators import Cross, Join, Leaf, Union
from bacalhau_flow.plan.pipeline import plan_pipeline
from bacalhau_flow.spec import load_spec_text
from bacalhau_flow.spec.models import CrossInput, Input


def load(text: str, base: Path | None = None):
    (p,) = load_spec_text(textwrap.dedent(text), source="spec.yaml", base_dir=base)
    return p


def spec_error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec_text(textwrap.dedent(text), source="spec.yaml")
    return info.value


def where(err: SpecError):
    return err.line, err.column, err.field


@pytest.fixture
def foo(tmp_path: Path) -> Path:
    d = tmp_path / "foo"
    d.mkdir()
    for i in range(50):
        (d / f"foo{i}").write_text(str(i))
    return tmp_path


def test_cross_loads_into_a_tree_with_urls_resolved(tmp_path):
    p = load("""\
    pipeline: x
    input:
      cross:
        - {name: a, url: foo, glob: "/foo?1"}
        - {union: [{name: b, url: foo, glob: "/foo*2"}, {name: c, url: "memory://m"}]}
      batch_size: 2
    transform: {cmd: [x]}
    """, tmp_path)
    assert isinstance(p.input, CrossInput) and p.input.batch_size == 2
    foo = str(tmp_path / "foo")
    assert p.input_tree() == Cross([Leaf("a", foo, "/foo?1"),
                                    Union([Leaf("b", foo, "/foo*2"), Leaf("c", "memory://m")])])


def test_a_single_input_is_still_an_input():
    p = load("pipeline: x\ninput: {url: memory://m/books}\ntransform: {cmd: [x]}\n")
    assert isinstance(p.input, Input) and p.input_tree() == Leaf("books", "memory://m/books")


def test_cross_plans_twenty_datums_and_job_run_names_every_input(foo):
    p = load("""\
    pipeline: x
    input:
      cross:
        - {name: a, url: foo, glob: "/foo?1"}
        - {name: b, url: foo, glob: "/foo*2"}
      batch_size: 3
    transform: {cmd: [x]}
    """, foo)
    plan = plan_pipeline(p)
    assert sum(len(s.datums) for s in plan.shards) == 20 and len(plan.shards) == 7
    assert plan.shards[0].datums[0].to_json() == {"a": ["/foo11"], "b": ["/foo12"]}
    job = JobRecord(id="j-test", pipeline="x", state="queued", created=0.0, shard_count=len(plan.shards))
    run = JobRun(p, plan.shards, job=job, jobs=None, content=None, scratch=None)
    request = run.request(plan.shards[0], attempt=1)
    assert [(ref.name, ref.url) for ref in request.inputs] == [("a", str(foo / "foo")), ("b", str(foo / "foo"))]


def test_group_and_join_keep_key_order(foo):
    p = load("""\
    pipeline: x
    input:
      group:
        - {name: in, url: foo, glob: "/foo(?)(?)", group_by: "$1"}
    transform: {cmd: [x]}
    """, foo)
    shards = plan_pipeline(p).shards
    assert [len(s.datums[0].mounts) for s in shards] == [10, 10, 10, 10]
    assert shards[0].datums[0].to_json() == {"in": [f"/foo1{d}" for d in range(10)]}


def test_join_members_keys_are_read(foo):
    p = load("""\
    pipeline: x
    input:
      join:
        - {name: a, url: foo, glob: "/foo(?)1", join_on: "$1", outer_join: true}
        - {name: b, url: foo, glob: "/foo(?)2", join_on: "$1"}
    transform: {cmd: [x]}
    """, foo)
    assert p.input_tree() == Join([Leaf("a", str(foo / "foo"), "/foo(?)1", join_on="$1", outer_join=True),
                                   Leaf("b", str(foo / "foo"), "/foo(?)2", join_on="$1")])


def test_empty_combinator_warns_with_zero_shards(foo):
    p = load("""\
    pipeline: x
    input: {cross: [{name: a, url: foo, glob: "/nothing"}, {name: b, url: foo}]}
    transform: {cmd: [x]}
    """, foo)
    plan = plan_pipeline(p)
    assert plan.shards == [] and plan.warnings == ["x: the cross input gives no datums; the job has 0 shards"]


@pytest.mark.parametrize("text, located, detail", [
    ("""\
    pipeline: wc
    input:
      cross:
        - {url: a/data}
        - {url: b/data}
    transform: {cmd: [x]}
    """, (5, 7, "wc.input.cross[1].name"), "input name 'data' is already used by input.cross[0]"),
    ("""\
    pipeline: wc
    input:
      join:
        - {url: a, glob: "/(*)", join_on: "$1"}
        - {url: b, glob: "/*", join_on: "$1"}
    transform: {cmd: [x]}
    """, (5, 28, "wc.input.join[1].join_on"), "$1 names capture group 1, but the glob has 0"),
    ("""\
    pipeline: wc
    input:
      join:
        - {url: a, glob: "/(*)", join_on: "$1"}
        - {url: b, glob: "/(*)"}
    transform: {cmd: [x]}
    """, (5, 7, "wc.input.join[1].join_on"), "a join member needs a join_on"),
    ("""\
    pipeline: wc
    input: {url: a, glob: "/(*)", group_by: "$1"}
    transform: {cmd: [x]}
    """, (2, 31, "wc.input.group_by"), "only members of a group have a group_by"),
    ("""\
    pipeline: wc
    input:
      union:
        - {url: a}
        - {url: b, batch_size: 2}
    transform: {cmd: [x]}
    """, (5, 16, "wc.input.union[1].batch_size"), "batch_size applies to the whole input"),
    ("""\
    pipeline: wc
    input:
      cross:
        - {url: a}
        - {urll: b}
    transform: {cmd: [x]}
    """, (5, 8, "wc.input.cross[1].urll"), "unknown field 'urll' (did you mean 'url'?)"),
    ("""\
    pipeline: wc
    input:
      cross: []
    transform: {cmd: [x]}
    """, (3, 10, "wc.input.cross"), "must not be empty"),
    ("""\
    pipeline: wc
    input:
      group:
        - {cross: [{url: a}]}
    transform: {cmd: [x]}
    """, (4, 7, "wc.input.group[0]"), "members of a group are single inputs"),
    ("""\
    pipeline: wc
    input:
      cross: [{url: a}]
      url: b
    transform: {cmd: [x]}
    """, (4, 3, "wc.input.url"), "unknown field 'url'; expected one of batch_size, cross"),
    ("""\
    pipeline: wc
    input:
      join:
        - {url: a, glob: "/(*)", join_on: "$1", outer_joins: true}
    transform: {cmd: [x]}
    """, (4, 45, "wc.input.join[0].outer_joins"), "unknown field 'outer_joins' (did you mean 'outer_join'?)"),
])
def test_bad_combinators_are_located(text, located, detail):
    err = spec_error(text)
    assert detail in err.detail
    assert where(err) == located, str(err)
