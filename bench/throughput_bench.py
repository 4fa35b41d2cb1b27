"""Datum throughput of `bflow run` beside a plain shell loop doing the same work, in one run.

Makes N one-line files (default 10,000) in folders of 100 (`d000/f00.txt`, ...), then:
- loop:  one bash script that, per shard of `batch_size` files, makes a work folder, copies
         the shard's files into it (one `cp --parents`), runs `/usr/bin/true` with its stdout
         and stderr in files, and hashes the inputs and both logs (one `sha256sum`): the
         copying, running and hashing bflow does per shard, with no scheduler around it, and
         removes the shard's folder (bflow removes each shard's work folder when it ends). Also
         timed: the same loop leaving its folders to one `rm -rf` at the end. On this machine's
         ext4 (no journal) creating files soon after deleting many costs several times more
         (the kernel skips recently deleted inodes: `recently_deleted` in ext4_create), so
         the two loops differ by 3x at 100,000 files;
- bflow: a pipeline over the same files (`glob: /**`, `batch_size`, `cmd: [true]`, local
         executor) through `run_pipeline` on the embedded network (3 nodes, one process).
         Warm: a first run of the same pipeline starts the Prefect server, imports everything
         and fills the CID cache of the content keys; the timed run is a second one with
         reprocess (every shard dispatched again). Planning, content keys, the job store,
         the Prefect flow and task runs, staging, the executor, the CIDs of logs and outputs
         and the merge are all inside the timed run.
Loop and bflow runs alternate (`--repeat`), each after the Prefect server has digested the run
before (it shares the cores); the best of each is kept. Prints both times, datums/s, the ratio
bflow / loop (aim: 2,000 datums/s and within 2x), and the CPU seconds of this process and of
the Prefect server during the best bflow run (on a busy machine the wall times say less).

    python bench/throughput_bench.py [--datums 10000] [--batch 100] [--repeat 3]
    python bench/throughput_bench.py --datums 100000        (batch_size 1000 by default then)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from prefect_server import cpu_seconds, server_pid, settle, stop_own_server  # noqa: E402  (bench/ is on the path)

PER_FOLDER = 100

LOOP = r"""
set -e
data=$1; work=$2; lists=$3  # $4: "each" removes each shard's folder when it is done
cd "$data"
for list in "$lists"/*; do
  s=${list##*/}; d=$work/$s
  mkdir -p "$d/in" "$d/out"
  mapfile -t files < "$list"
  cp --parents "${files[@]}" "$d/in/"
  (cd "$d/out" && /usr/bin/true > "$d/stdout" 2> "$d/stderr")
  (cd "$d/in" && sha256sum "${files[@]}" "$d/stdout" "$d/stderr" > "$d/hashes")
  if [ "$4" = each ]; then rm -rf "$d"; fi
done
"""
CLEAN = 'rm -rf "$1"'



def make_files(data: Path, count: int) -> list[str]:
    """`count` one-line files, PER_FOLDER to a folder; their paths relative to `data`, sorted."""
    paths = []
    for i in range(count):
        folder, name = divmod(i, PER_FOLDER)
        rel = f"d{folder:04d}/f{name:02d}.txt"
        if name == 0:
            (data / rel).parent.mkdir(parents=True)
        (data / rel).write_text(f"line {i}\n")
        paths.append(rel)
    past = time.time() - 60  # older than the CID cache's racy window (jobs/content_key.py)
    for rel in paths:
        os.utime(data / rel, (past, past))
    return paths


def shell_loop(data: Path, paths: list[str], batch: int, tmp: Path, run: str, remove_each: bool) -> tuple[float, float]:
    """(seconds of the loop, seconds of removing what it left)."""
    lists, work = tmp / f"lists-{run}", tmp / f"loop-{run}"
    lists.mkdir()
    work.mkdir()
    for s, start in enumerate(range(0, len(paths), batch)):
        (lists / f"{s:06d}").write_text("\n".join(paths[start:start + batch]) + "\n")
    script = tmp / "loop.sh"
    script.write_text(LOOP)
    t = time.perf_counter()
    subprocess.run(["bash", str(script), str(data), str(work), str(lists), "each" if remove_each else "end"],
                   check=True)
    took = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run(["bash", "-c", CLEAN, "clean", str(work)], check=True)
    return took, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datums", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=None, help="batch_size (default 100; 1000 from 100,000 datums)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each (the best is kept)")
    args = ap.parse_args()
    batch = args.batch or (1000 if args.datums >= 100_000 else 100)

    own_home = "BFLOW_HOME" not in os.environ
    tmp = Path(tempfile.mkdtemp(prefix="bflow-throughput-"))
    os.environ.setdefault("BFLOW_HOME", str(tmp / "home"))
    from bacalhau_flow.flow.runner import run_pipeline
    from bacalhau_flow.spec import load_spec_text

    try:
        data = tmp / "data"
        data.mkdir()
        t0 = time.perf_counter()
        paths = make_files(data, args.datums)
        print(f"{args.datums} files in {len(paths) // PER_FOLDER} folders in {time.perf_counter() - t0:.1f}s "
              f"under {data}; batch_size {batch} ({-(-args.datums // batch)} shards), {os.cpu_count()} cpus",
              flush=True)
        (pipeline,) = load_spec_text(
            f"pipeline: throughput\ninput: {{url: {data}, glob: '/**', batch_size: {batch}}}\n"
            "transform: {cmd: ['true']}\n")

        def bflow(reprocess: bool) -> float:
            t = time.perf_counter()
            job = run_pipeline(pipeline, reprocess=reprocess)
            took = time.perf_counter() - t
            assert job.state == "completed", job.error
            assert len(job.shards) == -(-args.datums // batch)
            return took

        warm = bflow(reprocess=False)
        print(f"bflow first run (server start, imports, CID cache): {warm:.2f}s", flush=True)
        server = server_pid()
        loops, bare, runs = [], [], []
        for run in range(args.repeat):
            settle()
            loops.append(shell_loop(data, paths, batch, tmp, f"{run}", remove_each=True))
            settle()
            bare.append(shell_loop(data, paths, batch, tmp, f"{run}-bare", remove_each=False))
            settle()
            own, theirs = os.times(), cpu_seconds(server)
            took = bflow(reprocess=True)
            after = os.times()
            runs.append((took, after.user - own.user + after.system - own.system, cpu_seconds(server) - theirs))
            print(f"  run {run + 1}: loop {loops[-1][0]:.2f}s (without removing each folder {bare[-1][0]:.2f}s "
                  f"+{bare[-1][1]:.2f}s at the end), bflow {took:.2f}s", flush=True)
        loop, (bare_loop, bare_clean) = min(loops)[0], min(bare)
        took, own_cpu, server_cpu = min(runs)
        n = args.datums
        print(f"shell loop   {loop:8.2f}s  {n / loop:9.0f} datums/s   "
              "(each shard's folder removed when done, as bflow does)")
        print(f"  the same, its folders left to the end: {bare_loop:.2f}s (+{bare_clean:.2f}s removing them then)")
        print(f"bflow run    {took:8.2f}s  {n / took:9.0f} datums/s   ({1000 * took / n:.3f} ms/datum; CPU: "
              f"this process {own_cpu:.2f}s, Prefect server {server_cpu:.2f}s)")
        print(f"ratio bflow / loop: {took / loop:.2f}x ({took / (bare_loop + bare_clean):.2f}x the loop that removes "
              f"at the end) (aim: 2,000 datums/s and within 2x)")
    finally:
        stop_own_server(own_home)
        subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=False)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
