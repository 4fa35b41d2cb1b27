"""Incremental reprocessing (`reprocess: changed`) and `bflow rerun`, end to end on the
embedded network: a shard whose content key already succeeded is reused, shown as `skipped`.

Every command appends a line to a log file outside its inputs, so the tests count the shards
that really ran on a node, not only what the job store says."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from cli_helpers import bflow, write_spec


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"  # one session shares $BFLOW_HOME: pipelines never collide


def _setup(tmp_path: Path, files: dict[str, str], *, cmd: str | None = None, extra: str = "",
           name: str = "inc") -> tuple[Path, Path, Path]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for rel, text in files.items():
        (data / rel).write_text(text)
    ran = tmp_path / "ran.log"
    cmd = cmd or (f"echo $BFLOW_SHARD_ID >> {ran}; for f in $BFLOW_INPUTS/data/*; do "
                  "tr a-z A-Z < $f > $BFLOW_OUTPUTS/$(basename $f); cat $f; done")
    spec = write_spec(tmp_path, f"pipeline: {_name(name)}\ninput: {{url: data, glob: '/*'}}\n"
                                f"transform: {{cmd: [sh, -c, '{cmd}']}}\n{extra}")
    return spec, data, ran


def _runs(ran: Path) -> int:
    """How many shards ran on a node so far (and forget them)."""
    if not ran.exists():
        return 0
    count = len(ran.read_text().splitlines())
    ran.unlink()
    return count


def _states(job: dict) -> list[str]:
    return [s["state"] for s in job["shards"]]


FILES = {f"f{i}.txt": f"text {i}\n" for i in range(5)}


def test_unchanged_second_run_dispatches_nothing_and_reuses_every_shard(tmp_path):
    spec, _, ran = _setup(tmp_path, FILES)
    first = bflow("run", spec, "--json")
    assert first.code == 0 and _runs(ran) == 5

    second = bflow("run", spec, "--json")
    assert second.code == 0, second.stderr
    job = second.json()
    assert _runs(ran) == 0
    assert job["state"] == "completed" and _states(job) == ["skipped"] * 5
    assert all(s["attempts"] == 0 and s["reused_from"] == first.json()["id"] for s in job["shards"])
    assert job["cid"] == first.json()["cid"]  # merged outputs identical
    assert [s["cid"] for s in job["shards"]] == [s["cid"] for s in first.json()["shards"]]
    assert "nothing changed: 5 of 5 shards reused" in second.stderr

    out = tmp_path / "out"
    assert bflow("get", job["id"], "-o", out).code == 0
    assert (out / "outputs" / "f3.txt").read_text() == "TEXT 3\n"
    assert (out / "stdout").read_text() == "".join(FILES.values())  # reused stdout, in shard order
    assert "5 reused" in bflow("list").stdout


def test_a_changed_file_reruns_only_its_shard(tmp_path):
    spec, data, ran = _setup(tmp_path, FILES)
    assert bflow("run", spec).code == 0 and _runs(ran) == 5
    (data / "f2.txt").write_text("changed\n")
    job = bflow("run", spec, "--json").json()
    assert _runs(ran) == 1
    assert _states(job) == ["skipped", "skipped", "completed", "skipped", "skipped"]
    out = tmp_path / "out"
    bflow("get", job["id"], "-o", out)
    assert (out / "outputs" / "f2.txt").read_text() == "CHANGED\n"
    assert (out / "outputs" / "f4.txt").read_text() == "TEXT 4\n"  # a skipped shard's output is merged in


def test_a_file_changed_within_the_same_second_is_seen(tmp_path):
    """Same size, mtime set back: the cache keys on ctime and inode too, and does not trust young entries."""
    spec, data, ran = _setup(tmp_path, FILES)
    assert bflow("run", spec).code == 0 and _runs(ran) == 5
    target = data / "f1.txt"
    before = target.stat()
    target.write_text("TEXT 1\n")  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    job = bflow("run", spec, "--json").json()
    assert _runs(ran) == 1 and job["shards"][1]["state"] == "completed"


def test_an_added_file_runs_one_shard(tmp_path):
    spec, data, ran = _setup(tmp_path, FILES)
    assert bflow("run", spec).code == 0 and _runs(ran) == 5
    (data / "f2b.txt").write_text("new\n")  # sorts between f2 and f3: later shards shift index
    job = bflow("run", spec, "--json").json()
    assert _runs(ran) == 1
    assert _states(job) == ["skipped"] * 3 + ["completed"] + ["skipped"] * 2


def test_a_changed_command_reruns_everything(tmp_path):
    spec, _, ran = _setup(tmp_path, FILES)
    assert bflow("run", spec).code == 0 and _runs(ran) == 5
    spec.write_text(spec.read_text().replace("tr a-z A-Z", "tr a-z B-ZA"))
    job = bflow("run", spec, "--json").json()
    assert _runs(ran) == 5 and _states(job) == ["completed"] * 5


def test_reprocess_always_and_the_reprocess_flag_run_everything(tmp_path):
    spec, _, ran = _setup(tmp_path, FILES, extra="reprocess: always\n")
    assert bflow("run", spec).code == 0 and _runs(ran) == 5
    assert _states(bflow("run", spec, "--json").json()) == ["completed"] * 5 and _runs(ran) == 5

    (tmp_path / "b").mkdir()
    spec2, _, ran2 = _setup(tmp_path / "b", FILES)
    assert bflow("run", spec2).code == 0 and _runs(ran2) == 5
    job = bflow("run", spec2, "--reprocess", "--json").json()
    assert _runs(ran2) == 5 and _states(job) == ["completed"] * 5
    # ... and a later plain run reuses what the forced run left
    assert _states(bflow("run", spec2, "--json").json()) == ["skipped"] * 5 and _runs(ran2) == 0


def test_a_shard_that_succeeded_in_a_failed_job_is_reused_and_rerun_fixes_the_job(tmp_path):
    flag = tmp_path / "flag"
    ran = tmp_path / "ran.log"
    # shard 2 fails until the flag file exists; the flag is not an input, so its key does not change
    cmd = (f"echo $BFLOW_SHARD_ID >> {ran}; "
           f"if [ $BFLOW_SHARD_INDEX = 2 ] && [ ! -e {flag} ]; then echo no flag >&2; exit 3; fi; "
           "cp $BFLOW_INPUTS/data/* $BFLOW_OUTPUTS/")
    spec, _, _ = _setup(tmp_path, FILES, cmd=cmd)
    failed = bflow("run", spec, "--json")
    assert failed.code == 1 and _runs(ran) == 5
    assert _states(failed.json()) == ["completed", "completed", "failed", "completed", "completed"]

    again = bflow("run", spec, "--json")  # a new job: the 4 good shards reused, shard 2 runs (and fails)
    assert _runs(ran) == 1 and _states(again.json()) == ["skipped", "skipped", "failed", "skipped", "skipped"]

    flag.write_text("")
    job_id = failed.json()["id"]
    rerun = bflow("rerun", job_id[:12], "--json")
    assert rerun.code == 0, rerun.stderr
    assert _runs(ran) == 1
    job = rerun.json()
    assert job["state"] == "completed" and job["id"] == job_id
    assert _states(job) == ["completed"] * 5 and job["shards"][2]["attempts"] == 2
    out = tmp_path / "out"
    bflow("get", job_id, "-o", out)
    assert sorted(p.name for p in (out / "outputs").iterdir()) == sorted(FILES)
    assert bflow("describe", job_id, "--json").json()["cid"] == job["cid"]

    # the rerun's result is reusable too: nothing runs next time
    assert _states(bflow("run", spec, "--json").json()) == ["skipped"] * 5 and _runs(ran) == 0


def test_rerun_of_chosen_shards_and_of_a_job_with_nothing_failed(tmp_path):
    spec, _, ran = _setup(tmp_path, FILES)
    job = bflow("run", spec, "--json").json()
    _runs(ran)
    nothing = bflow("rerun", job["id"])
    assert nothing.code == 0 and "nothing to rerun" in nothing.stderr and _runs(ran) == 0
    chosen = bflow("rerun", job["id"], "--shard", "1", "--shard", "3", "--json")
    assert chosen.code == 0 and _runs(ran) == 2
    shards = chosen.json()["shards"]
    assert [s["attempts"] for s in shards] == [1, 2, 1, 2, 1] and chosen.json()["cid"] == job["cid"]
    bad = bflow("rerun", job["id"], "--shard", "9")
    assert bad.code == 1 and "has no shard 9" in bad.stderr


def test_rerun_refuses_a_changed_transform(tmp_path):
    spec, _, _ = _setup(tmp_path, FILES, cmd="exit 1")
    job = bflow("run", spec, "--json").json()
    spec.write_text(spec.read_text().replace("exit 1", "exit 0"))
    refused = bflow("rerun", job["id"])
    assert refused.code == 1 and "changed since the job ran" in refused.stderr and "bflow run" in refused.stderr
