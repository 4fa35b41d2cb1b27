"""stdout and stderr count toward a shard's `resources.disk`: a stream past it is cut, the
command is stopped, the shard fails saying so, and the work folder never holds much more."""

from __future__ import annotations

import threading
from pathlib import Path

from cli_helpers import bflow, write_spec

from bacalhau_flow.executors.local import LocalExecutor
from bacalhau_flow.network.disk import cut_streams, work_bytes
from bacalhau_flow.network.messages import InputRef, ResourceAsk, ShardRequest, TransformRef
from bacalhau_flow.network.shard_run import run_shard_attempt
from bacalhau_flow.storage import ContentStore

MI = 1 << 20


def request(tmp_path: Path, script: str, disk: int) -> ShardRequest:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "a.txt").write_text("alpha\n")
    return ShardRequest(job_id="j-streams", pipeline="p", shard_index=0, shard_id="s", shard_count=1,
                        transform=TransformRef(cmd=["sh", "-c", script]),
                        inputs=[InputRef(name="data", url=str(tmp_path / "data"))], datums=[{"data": ["/a.txt"]}],
                        resources=ResourceAsk(cpu=0.5, memory=64 * MI, disk=disk))


def test_500_mb_of_stdout_under_a_100_mi_limit_is_cut_and_fails_the_shard(tmp_path):
    store, work_root = ContentStore(tmp_path / "store"), tmp_path / "work"
    largest, stop = [0], threading.Event()

    def sample() -> None:  # the size of everything under the work folder, as often as we can
        while not stop.is_set():
            for job in list(work_root.glob("*/*")):
                largest[0] = max(largest[0], sum(work_bytes(job, skip=()).values()))
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = run_shard_attempt(request(tmp_path, "echo starting >&2; head -c 500000000 /dev/zero", 100 * MI),
                                   LocalExecutor(), store, work_root, "n-test")
    finally:
        stop.set()
        sampler.join()
    assert result.state == "failed" and result.exit_code != 0
    kept = 100 * MI - len("alpha\n") - len("starting\n")
    assert result.error.startswith(f"stdout cut at {kept} bytes: the shard's disk limit is 100.0 MiB, 6 B of it "
                                   "taken by its inputs"), result.error
    stderr = store.cat(result.stderr_cid).decode()
    assert stderr.startswith("starting\n") and f"bflow: stdout cut at {kept} bytes" in stderr
    assert sum(len(b) for b in store.iter_file(result.stdout_cid)) == kept
    assert largest[0] <= 100 * MI + 4096, f"the work folder held {largest[0]} bytes"


def test_streams_and_outputs_together_count(tmp_path):
    store = ContentStore(tmp_path / "store")
    script = "head -c 70000000 /dev/zero > $BFLOW_OUTPUTS/big; head -c 70000000 /dev/zero >&2; sleep 5"
    result = run_shard_attempt(request(tmp_path, script, 100 * MI), LocalExecutor(), store, tmp_path / "w", "n-test")
    assert result.state == "failed" and result.outputs_cid is None
    # stderr alone fits, so it is not cut as it is written; the disk watch sees both and stops it
    assert "wrote" in result.error and "stderr" in result.error and "outputs" in result.error, result.error
    assert "more than the 100.0 MiB its disk limit of 100.0 MiB leaves" in result.error


def test_streams_left_over_the_limit_by_another_executor_are_truncated(tmp_path):
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    out.write_bytes(b"o" * 900)
    err.write_bytes(b"e" * 300)
    assert cut_streams(out, err, 1000) == ("stdout", 700)
    assert (out.stat().st_size, err.stat().st_size) == (700, 300)
    assert cut_streams(out, err, 1000) is None
    out.write_bytes(b"o" * 900)
    err.write_bytes(b"e" * 800)
    assert cut_streams(out, err, 1000) == ("stdout", 500)
    assert (out.stat().st_size, err.stat().st_size) == (500, 500)


def test_bflow_run_says_the_stream_was_cut(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a\n")
    spec = write_spec(tmp_path, "pipeline: loud\ninput: {url: data, glob: '/*'}\nresources: {disk: 1Mi}\n"
                                "transform: {cmd: [sh, -c, 'yes']}\n")
    r = bflow("run", spec, "--json")
    assert r.code == 1
    shard = r.json()["shards"][0]
    assert shard["error"].startswith("stdout cut at") and "disk limit is 1.0 MiB" in shard["error"]
    assert shard["attempts"] == 1
