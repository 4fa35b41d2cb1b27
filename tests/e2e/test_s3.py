"""s3:// inputs and publishing outputs (`output.publish`), with `bflow`, against a real moto S3 server."""

from __future__ import annotations

import json

import pytest
from cli_helpers import bflow, write_spec

FILES = {"a.txt": b"alpha\n", "b.csv": b"1,2\n", "sub/c.txt": b"gamma\n", "sub/deep/d.txt": b"delta\n"}


@pytest.fixture
def bucket(s3_server):
    return s3_server.bucket({f"data/{k}": v for k, v in FILES.items()})


LIST_FILES = "cd $BFLOW_INPUTS/data && find . -type f | sort | while read f; do echo \"$f $(cat \"$f\")\"; done"


def test_plan_and_run_over_s3_with_a_star_glob(tmp_path, bucket):
    spec = write_spec(tmp_path, f"""
pipeline: s3-star
input: {{name: data, url: 's3://{bucket}/data', glob: '/*'}}
transform: {{cmd: [sh, -c, '{LIST_FILES}']}}
""")
    plan = bflow("plan", spec, "--json")
    assert plan.code == 0, plan.stderr
    shards = plan.json()["pipelines"][0]["shards"]
    assert [s["datums"] for s in shards] == [[{"data": ["/a.txt"]}], [{"data": ["/b.csv"]}], [{"data": ["/sub"]}]]
    r = bflow("run", spec)
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["./a.txt alpha", "./b.csv 1,2", "./sub/c.txt gamma", "./sub/deep/d.txt delta"]


def test_run_over_s3_with_a_double_star_glob_gives_one_shard_per_key(tmp_path, bucket):
    spec = write_spec(tmp_path, f"""
pipeline: s3-all
input: {{name: data, url: 's3://{bucket}/data/', glob: '/**'}}
transform: {{cmd: [sh, -c, '{LIST_FILES}']}}
""")
    r = bflow("run", spec, "--json")
    assert r.code == 0, r.stderr
    job = r.json()
    assert len(job["shards"]) == 4 and all(s["state"] == "completed" for s in job["shards"])
    out = tmp_path / "out"
    assert bflow("get", job["id"], "-o", out).code == 0
    assert [(out / "shards" / str(i) / "stdout").read_text() for i in range(4)] == [
        "./a.txt alpha\n", "./b.csv 1,2\n", "./sub/c.txt gamma\n", "./sub/deep/d.txt delta\n"]


def test_missing_bucket_is_a_clear_error_naming_the_bucket(tmp_path, s3_server):
    spec = write_spec(tmp_path, """
pipeline: s3-nobucket
input: {name: data, url: 's3://bflow-no-such-bucket/data', glob: '/*'}
transform: {cmd: ['true']}
""")
    r = bflow("run", spec)
    assert r.code == 2
    assert "bucket 'bflow-no-such-bucket' does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_prefix_matching_nothing_is_an_empty_succeeding_job(tmp_path, bucket):
    spec = write_spec(tmp_path, f"""
pipeline: s3-empty
input: {{name: data, url: 's3://{bucket}/nothing-here', glob: '/*'}}
transform: {{cmd: ['true']}}
""")
    r = bflow("run", spec, "--json")
    assert r.code == 0, r.stderr
    assert "matched nothing" in r.stderr
    assert r.json()["state"] == "completed" and r.json()["shards"] == []


UPPER = "for f in $BFLOW_INPUTS/data/*; do tr a-z A-Z < $f > $BFLOW_OUTPUTS/$(basename $f); done; " \
        "mkdir -p $BFLOW_OUTPUTS/by-shard; echo $BFLOW_SHARD_INDEX > $BFLOW_OUTPUTS/by-shard/$BFLOW_SHARD_INDEX"


def publishing_spec(tmp_path, bucket: str, publish: str):
    # reprocess: always, as two tests' buckets hold the same bytes, and when both were filled in
    # the same second their ETag and LastModified agree: one content key, so the second test's
    # shard would be reused (skipped), not run.
    return write_spec(tmp_path, f"""
pipeline: s3-pub
reprocess: always
input: {{name: data, url: 's3://{bucket}/data', glob: '/*.txt'}}
transform: {{cmd: [sh, -c, '{UPPER}']}}
output: {{publish: '{publish}'}}
""")


def test_outputs_are_published_under_the_url_with_the_job_id(tmp_path, s3_server, bucket):
    results = s3_server.bucket()
    spec = publishing_spec(tmp_path, bucket, f"s3://{results}/runs/{{pipeline}}/{{job_id}}")
    r = bflow("run", spec, "--json")
    assert r.code == 0, r.stderr
    job = r.json()
    url = f"s3://{results}/runs/s3-pub/{job['id']}"
    assert job["published"] == url
    assert f"published to {url}" in r.stderr
    assert s3_server.read(results, f"runs/s3-pub/{job['id']}") == {"a.txt": b"ALPHA\n", "by-shard/0": b"0\n"}
    described = bflow("describe", job["id"], "--json")
    assert described.json()["published"] == url
    assert f"published {url}" in bflow("describe", job["id"]).stdout
    out = tmp_path / "out"
    assert bflow("get", job["id"], "-o", out).code == 0
    assert json.loads((out / "manifest.json").read_text())["published"] == url


def test_publishing_to_a_missing_bucket_fails_the_job_and_keeps_the_outputs(tmp_path, bucket):
    spec = publishing_spec(tmp_path, bucket, "s3://bflow-no-such-bucket/{job_id}")
    r = bflow("run", spec, "--json")
    assert r.code == 1
    job = r.json()
    assert job["state"] == "failed" and job["published"] is None
    assert f"cannot publish the outputs to s3://bflow-no-such-bucket/{job['id']}" in job["error"]
    assert "bucket does not exist" in job["error"]
    assert [s["state"] for s in job["shards"]] == ["completed"]
    assert "Traceback" not in r.stderr
    out = tmp_path / "out"
    assert bflow("get", job["id"], "-o", out).code == 0
    assert (out / "outputs" / "a.txt").read_text() == "ALPHA\n"


def test_a_failed_job_is_not_published(tmp_path, s3_server, bucket):
    results = s3_server.bucket()
    spec = write_spec(tmp_path, f"""
pipeline: s3-fails
input: {{name: data, url: 's3://{bucket}/data', glob: '/*.txt'}}
transform: {{cmd: [sh, -c, 'echo partial > $BFLOW_OUTPUTS/p; exit 3']}}
output: {{publish: 's3://{results}/{{job_id}}'}}
""")
    r = bflow("run", spec, "--json")
    assert r.code == 1 and r.json()["published"] is None
    assert s3_server.read(results) == {}


def test_a_local_publish_path_is_relative_to_the_spec(tmp_path, bucket):
    spec = publishing_spec(tmp_path, bucket, "published/{job_id}")
    r = bflow("run", spec, "--json")
    assert r.code == 0, r.stderr
    target = tmp_path / "published" / r.json()["id"]
    assert r.json()["published"] == str(target)
    assert (target / "a.txt").read_text() == "ALPHA\n" and (target / "by-shard" / "0").read_text() == "0\n"


def test_unknown_placeholder_in_publish_is_a_located_spec_error(tmp_path):
    spec = write_spec(tmp_path, "pipeline: pub\ninput: {url: data}\ntransform: {cmd: ['true']}\n"
                                "output:\n  publish: 's3://b/{job}'\n")
    r = bflow("validate", spec)
    assert r.code == 2
    assert f"{spec}:5:12: pub.output.publish: unknown placeholder {{job}}" in r.stderr.replace("\n", "")
