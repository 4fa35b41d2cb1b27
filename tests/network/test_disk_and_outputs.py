"""A shard's disk limit covers its inputs and outputs; outputs never follow symlinks."""

import time

from cli_helpers import bflow, write_spec


def run_job(tmp_path, transform: str, disk: str = "1Mi", data: dict[str, bytes] | None = None):
    folder = tmp_path / "data"
    folder.mkdir()
    for name, body in (data or {"a.txt": b"alpha\n"}).items():
        (folder / name).write_bytes(body)
    spec = write_spec(tmp_path, f"pipeline: disk\ninput: {{url: data, glob: '/*'}}\n"
                                f"resources: {{disk: {disk}}}\ntransform:\n  cmd: [sh, -c, '{transform}']\n")
    r = bflow("run", spec, "--json")
    got = tmp_path / "got"
    job = r.json()
    assert bflow("get", job["id"], "-o", got).code == 0
    return r, job, got


def test_a_shard_that_writes_past_its_disk_limit_is_stopped_and_fails_clearly(tmp_path):
    started = time.monotonic()
    # Writes 64 KiB every 10 ms without end: only the disk watch can stop it.
    r, job, got = run_job(tmp_path, "echo started; head -c 65536 /dev/zero > $BFLOW_OUTPUTS/chunk; "
                                    "while :; do cat $BFLOW_OUTPUTS/chunk >> $BFLOW_OUTPUTS/big; sleep 0.01; done")
    assert r.code == 1 and job["state"] == "failed"
    assert time.monotonic() - started < 60
    shard = job["shards"][0]
    assert "more than the" in shard["error"] and "disk limit of 1.0 MiB" in shard["error"]
    assert shard["attempts"] == 1, "a shard over its own limit is not retried elsewhere"
    assert (got / "shards" / "0" / "stdout").read_text() == "started\n"
    assert "resources.disk" in (got / "shards" / "0" / "stderr").read_text()


def test_outputs_left_over_the_limit_by_a_quick_command_fail_the_shard(tmp_path):
    r, job, _ = run_job(tmp_path, "head -c 2000000 /dev/zero > $BFLOW_OUTPUTS/big")
    assert r.code == 1
    assert "disk limit" in job["shards"][0]["error"]


def test_inputs_larger_than_the_disk_limit_fail_before_the_command_runs(tmp_path):
    r, job, got = run_job(tmp_path, "echo ran", disk="100Ki", data={"big.bin": b"x" * 300_000})
    assert r.code == 1
    error = job["shards"][0]["error"]
    assert "inputs of shard 0 are 293.0 KiB, more than its disk limit of 100.0 KiB" in error
    assert (got / "shards" / "0" / "stdout").read_text() == ""


def test_a_symlink_out_of_outputs_is_neither_followed_nor_published(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not publish\n")
    r, job, got = run_job(tmp_path, f"ln -s {secret} $BFLOW_OUTPUTS/leak; ln -s / $BFLOW_OUTPUTS/root; "
                                    "echo kept > $BFLOW_OUTPUTS/real")
    assert r.code == 0, r.stderr
    assert sorted(p.name for p in (got / "outputs").iterdir()) == ["real"]
    assert "do not publish" not in "".join(p.read_text() for p in got.rglob("*") if p.is_file())
    stderr = (got / "shards" / "0" / "stderr").read_text()
    assert "/outputs/leak" in stderr and "/outputs/root" in stderr and "never followed" in stderr


def test_outputs_nested_past_the_limit_fail_the_shard_clearly_and_are_not_retried(tmp_path):
    deep = "/".join(["d"] * 600)  # deeper than a recursive walk could go: that failed the attempt on every node
    r, job, got = run_job(tmp_path, f"mkdir -p $BFLOW_OUTPUTS/{deep}")
    assert r.code == 1 and job["state"] == "failed"
    shard = job["shards"][0]
    assert "nested more than 400 deep" in shard["error"], shard["error"]
    assert shard["attempts"] == 1, "outputs no node can store are not retried elsewhere"
    assert "nested more than 400 deep" in (got / "shards" / "0" / "stderr").read_text()
