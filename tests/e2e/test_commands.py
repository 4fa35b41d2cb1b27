"""Commands a script uses: `--json` everywhere it reads, the job a prefix names, counts."""

import json

from cli_helpers import PIPELINES, bflow

from bacalhau_flow.home import jobs_db
from bacalhau_flow.jobs.store import JobStore


def test_validate_version_schema_and_network_speak_json(tmp_path):
    ok = bflow("validate", PIPELINES / "wordcount.yaml", "--json")
    assert ok.code == 0 and ok.json() == {"spec": str(PIPELINES / "wordcount.yaml"), "valid": True,
                                          "pipelines": ["wordcount"]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: x\ninput: {url: nowhere}\ntransform: {cmd: [true]}\nresources: {cpu: lots}\n")
    failed = bflow("validate", bad, "--json")
    assert failed.code == 2 and failed.json()["valid"] is False and failed.json()["error"]
    assert "version" in bflow("version", "--json").json()
    assert "$defs" in bflow("schema", "--json").json()
    picture = bflow("network", "--json").json()
    assert set(picture) == {"network", "nodes", "job"}


def test_nodes_without_a_network_lists_the_embedded_ones():
    listed = bflow("nodes", "--json").json()
    assert len(listed) == 3 and all(n["id"].startswith("n-") for n in listed)


def test_an_ambiguous_job_prefix_lists_the_jobs_it_matches():
    store = JobStore(jobs_db())
    try:
        a = store.create_job("amb", [(0, "s0", [])], job_id="j-ambig0aaaa")
        b = store.create_job("amb", [(0, "s0", [])], job_id="j-ambig0bbbb")
    finally:
        store.close()
    done = bflow("describe", "j-ambig0")
    assert done.code != 0
    assert a.id in done.stderr and b.id in done.stderr


def own_wordcount(tmp_path, name: str):
    """The wordcount example as a pipeline of its own name: no other test reuses its results."""
    spec = tmp_path / f"{name}.yaml"
    spec.write_text((PIPELINES / "wordcount.yaml").read_text().replace("pipeline: wordcount", f"pipeline: {name}")
                    .replace("url: data/books", f"url: {PIPELINES / 'data' / 'books'}"))
    return spec


def test_list_shows_completed_counts(tmp_path):
    job = bflow("run", own_wordcount(tmp_path, "counted"), "--json").json()
    listed = {j["id"]: j for j in bflow("list", "--json").json()}
    assert listed[job["id"]]["completed"] == listed[job["id"]]["shards"] == 3
    assert "COMPLETED" in bflow("list").stdout
    assert json.dumps(listed[job["id"]])  # plain JSON


def test_an_unreachable_network_is_one_line_within_seconds_and_a_failed_job(tmp_path):
    import time

    start = time.monotonic()
    done = bflow("run", own_wordcount(tmp_path, "unreached"), "--network", "nats://127.0.0.1:1")
    assert time.monotonic() - start < 15
    assert done.code != 0 and "cannot reach NATS at nats://127.0.0.1:1" in done.stderr
    assert "Traceback" not in done.stderr
    newest = bflow("list", "--json").json()[0]
    assert newest["state"] == "failed"  # never left queued
