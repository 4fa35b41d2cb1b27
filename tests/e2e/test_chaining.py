"""Chaining: `pipeline://NAME` inputs, and a file of several pipelines run as a DAG."""

import json
import uuid

from cli_helpers import PIPELINES, bflow, write_spec


def unique(name: str) -> str:
    """Pipeline names are global in the job store that the session's tests share."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def books_words() -> int:
    return sum(len(b.read_text().split()) for b in (PIPELINES / "data" / "books").glob("*.txt"))


def test_chain_example_splits_processes_and_reduces_in_dependency_order(tmp_path):
    plan = bflow("plan", PIPELINES / "chain.yaml", "--json")
    assert plan.code == 0, plan.stderr
    planned = {p["name"]: p for p in plan.json()["pipelines"]}
    assert [p["name"] for p in plan.json()["pipelines"]] == ["split", "process", "reduce"]
    assert len(planned["split"]["shards"]) == 3
    assert planned["process"]["planned_after"] == ["split"] and planned["reduce"]["planned_after"] == ["process"]
    human = bflow("plan", PIPELINES / "chain.yaml")
    assert "process: planned after split runs" in human.stdout

    out = tmp_path / "results"
    r = bflow("run", PIPELINES / "chain.yaml", "--json", "--output", out)
    assert r.code == 0, r.stderr
    jobs = {j["pipeline"]: j for j in r.json()["jobs"]}
    assert [j["state"] for j in jobs.values()] == ["completed"] * 3
    # alice and moby have 3 lines (2 parts each), pride 2 lines (1 part): 5 parts, one shard each
    assert len(jobs["process"]["shards"]) == 5 and len(jobs["reduce"]["shards"]) == 1
    total = (out / "reduce" / "outputs" / "total.txt").read_text()
    assert total == f"{books_words()} words in 5 parts\n"
    # each downstream job names the upstream job and output it read
    assert jobs["process"]["upstreams"] == [{"pipeline": "split", "job": jobs["split"]["id"],
                                             "cid": jobs["split"]["cid"]}]
    assert jobs["reduce"]["upstreams"][0]["job"] == jobs["process"]["id"]
    for line in ("(split): completed", "(process): completed", "(reduce): completed"):
        assert line in r.stderr


def test_a_downstream_of_a_failed_upstream_does_not_run_and_says_why(tmp_path):
    split, process, reduce_, other = (unique(n) for n in ("split", "process", "reduce", "other"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a\n")
    spec = write_spec(tmp_path, f"""
pipeline: {split}
input: {{url: data}}
transform: {{cmd: [sh, -c, 'echo broken >&2; exit 4']}}
---
pipeline: {process}
input: {{url: 'pipeline://{split}'}}
transform: {{cmd: ['true']}}
---
pipeline: {reduce_}
input: {{url: 'pipeline://{process}'}}
transform: {{cmd: ['true']}}
---
pipeline: {other}
input: {{url: data}}
transform: {{cmd: [sh, -c, 'cat $BFLOW_INPUTS/data/a.txt']}}
""")
    r = bflow("run", spec, "--json")
    assert r.code == 1
    jobs = {j["pipeline"]: j for j in r.json()["jobs"]}
    assert jobs[split]["state"] == "failed"
    assert jobs[other]["state"] == "completed"  # independent of the failure
    for name in (process, reduce_):
        assert jobs[name]["state"] == "cancelled" and jobs[name]["shards"] == []
        assert jobs[name]["error"] == f"not run: upstream {split} failed"
    human = bflow("run", spec)
    assert human.code == 1
    assert f"({process}): not run (upstream {split} failed)" in human.stderr
    assert f"({reduce_}): not run (upstream {split} failed)" in human.stderr
    described = bflow("describe", jobs[reduce_]["id"])
    assert f"not run: upstream {split} failed" in described.stdout


def test_two_independent_pipelines_in_one_file_both_run(tmp_path):
    left, right = unique("left"), unique("right")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("x\n")
    spec = write_spec(tmp_path, f"""
pipeline: {left}
input: {{url: data}}
transform: {{cmd: [sh, -c, 'sleep 1; echo left | tee $BFLOW_OUTPUTS/left.txt']}}
---
pipeline: {right}
input: {{url: data}}
transform: {{cmd: [sh, -c, 'sleep 1; echo right | tee $BFLOW_OUTPUTS/right.txt']}}
""")
    r = bflow("run", spec, "--json")
    assert r.code == 0, r.stderr
    jobs = r.json()["jobs"]
    assert [(j["pipeline"], j["state"]) for j in jobs] == [(left, "completed"), (right, "completed")]
    assert all(j["upstreams"] == [] for j in jobs)


def test_pipeline_url_reads_the_latest_completed_run_of_another_file(tmp_path):
    source = unique("source")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "n.txt").write_text("1\n")
    first = write_spec(tmp_path, f"""
pipeline: {source}
input: {{url: data}}
transform: {{cmd: [sh, -c, 'mkdir $BFLOW_OUTPUTS/parts; seq 3 > $BFLOW_OUTPUTS/parts/a; seq 4 > $BFLOW_OUTPUTS/parts/b']}}
""", name="first.yaml")
    second = write_spec(tmp_path, f"""
pipeline: sink
input:
  cross:
    - {{url: 'pipeline://{source}/parts', glob: '/*'}}
    - {{url: data, name: extra}}
transform: {{cmd: [sh, -c, 'wc -l < $BFLOW_INPUTS/{source}/$(ls $BFLOW_INPUTS/{source})']}}
""", name="second.yaml")
    never = bflow("validate", second)  # nothing ran yet: a located spec error
    assert never.code == 2
    assert f"{second}:5:13: sink.input.cross[0].url: unknown pipeline {source!r}" in never.stderr.replace("\n", "")
    assert "run the spec that defines" in never.stderr

    up = bflow("run", first, "--json").json()
    assert up["state"] == "completed"
    assert bflow("validate", second).code == 0
    plan = bflow("plan", second, "--json").json()
    datums = [d for s in plan["pipelines"][0]["shards"] for d in s["datums"]]
    assert datums == [{source: ["/a"], "extra": ["/"]}, {source: ["/b"], "extra": ["/"]}]
    r = bflow("run", second, "--json")
    assert r.code == 0, r.stderr
    job = r.json()
    assert job["upstreams"] == [{"pipeline": source, "job": up["id"], "cid": up["cid"]}]
    assert bflow("logs", job["id"]).stdout.split() == ["3", "4"]
    assert bflow("describe", job["id"], "--json").json()["upstreams"] == job["upstreams"]


def test_an_upstream_that_never_completed_is_a_located_error_with_a_hint(tmp_path):
    broken = unique("broken")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a").write_text("a")
    first = write_spec(tmp_path, f"pipeline: {broken}\ninput: {{url: data}}\ntransform: {{cmd: ['false']}}\n",
                       name="first.yaml")
    failed = bflow("run", first, "--json").json()
    second = write_spec(tmp_path, f"pipeline: after\ninput: {{url: 'pipeline://{broken}'}}\n"
                                  "transform: {cmd: ['true']}\n", name="second.yaml")
    r = bflow("run", second)
    assert r.code == 2
    assert (f"{second}:2:14: after.input.url: pipeline {broken!r} has no completed run to read from "
            f"(its latest job {failed['id']} is failed)") in r.stderr.replace("\n", "")


def test_a_cycle_is_a_located_spec_error_for_validate_plan_and_run(tmp_path):
    spec = write_spec(tmp_path, """
pipeline: a
input: {url: 'pipeline://b'}
transform: {cmd: ['true']}
---
pipeline: b
input: {url: 'pipeline://a'}
transform: {cmd: ['true']}
""")
    for command in ("validate", "plan", "run"):
        r = bflow(command, spec)
        assert r.code == 2, command
        assert f"{spec}:7:14: b.input.url: pipelines read each other's outputs in a cycle: a reads b, b reads a" \
            in r.stderr.replace("\n", "")


def test_changed_upstream_parts_keep_the_shard_ids_of_unchanged_parts_downstream(tmp_path):
    split, count = unique("split"), unique("count")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("one\n")
    (data / "b.txt").write_text("two\n")
    spec = write_spec(tmp_path, f"""
pipeline: {split}
input: {{url: data, glob: '/*'}}
transform: {{cmd: [sh, -c, 'cp $BFLOW_INPUTS/data/* $BFLOW_OUTPUTS/']}}
---
pipeline: {count}
input: {{url: 'pipeline://{split}', glob: '/*'}}
transform: {{cmd: [sh, -c, 'cat $BFLOW_INPUTS/{split}/*']}}
""")
    before = {j["pipeline"]: j for j in bflow("run", spec, "--json").json()["jobs"]}
    (data / "b.txt").write_text("two, changed\n")
    r = bflow("run", spec, "--json")
    assert r.code == 0, r.stderr
    after = {j["pipeline"]: j for j in r.json()["jobs"]}
    assert after[split]["cid"] != before[split]["cid"]
    assert [s["id"] for s in after[count]["shards"]] == [s["id"] for s in before[count]["shards"]]
    got = tmp_path / "got"
    assert bflow("get", after[count]["id"], "-o", got).code == 0
    assert (got / "stdout").read_text() == "one\ntwo, changed\n"
    assert json.loads((got / "manifest.json").read_text())["state"] == "completed"
    # and only the changed part ran again downstream: a's shard reused the earlier result
    assert [s["state"] for s in after[count]["shards"]] == ["skipped", "completed"]


def test_editing_one_book_reruns_only_the_affected_shards_down_the_chain(tmp_path):
    import shutil

    copy = tmp_path / "pipelines"
    shutil.copytree(PIPELINES, copy)
    first = {j["pipeline"]: j for j in bflow("run", copy / "chain.yaml", "--json").json()["jobs"]}
    with open(copy / "data" / "books" / "pride.txt", "a") as f:
        f.write("a line added to pride\n")  # pride gets a second part; alice and moby are unchanged
    r = bflow("run", copy / "chain.yaml", "--json")
    assert r.code == 0, r.stderr
    jobs = {j["pipeline"]: j for j in r.json()["jobs"]}
    ran = {name: sum(s["state"] == "completed" for s in job["shards"]) for name, job in jobs.items()}
    reused = {name: sum(s["state"] == "skipped" for s in job["shards"]) for name, job in jobs.items()}
    assert (ran, reused) == ({"split": 1, "process": 1, "reduce": 1}, {"split": 2, "process": 5, "reduce": 0})
    assert len(first["process"]["shards"]) == 5 and len(jobs["process"]["shards"]) == 6
