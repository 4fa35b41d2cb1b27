"""What does a re-run with one changed file cost, against the full run?

Makes 10,000 small files, runs a pipeline over them with batch_size 100 (100 shards) on the
embedded network of 3 nodes, changes one file, and runs it again (`reprocess: changed`: 99
shards reused, 1 dispatched). Both runs happen in one process after a warm-up job, so neither
pays for Prefect's ephemeral server start or the imports; each includes planning (listing the
files), content keys, the flow run and merging the outputs. Prints both times and the ratio
re-run / full run, and a third run with nothing changed (no flow run at all).

    python bench/reprocess_bench.py [--files 10000] [--batch 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reprocess-bench-") as tmp:
        os.environ["BFLOW_HOME"] = str(Path(tmp) / "home")
        os.environ.pop("PREFECT_API_URL", None)
        from bacalhau_flow.flow.runner import run_pipeline
        from bacalhau_flow.spec import load_spec

        data = Path(tmp) / "data"
        data.mkdir()
        for i in range(args.files):
            (data / f"f{i:05d}.txt").write_text(f"line {i}\n" * 4)
        spec = Path(tmp) / "spec.yaml"
        spec.write_text(
            "pipeline: warmup\ninput: {url: data, glob: '/f0000*.txt'}\ntransform: {cmd: ['true']}\n---\n"
            f"pipeline: bench\ninput: {{url: data, glob: '/*.txt', batch_size: {args.batch}}}\n"
            "transform: {cmd: [sh, -c, 'cat $BFLOW_INPUTS/data/* | wc -l > $BFLOW_OUTPUTS/$BFLOW_SHARD_ID.txt']}\n")
        warmup, bench = load_spec(spec)

        def timed(label: str) -> float:
            start = time.perf_counter()
            job = run_pipeline(bench)
            took = time.perf_counter() - start
            states = {s: sum(x.state == s for x in job.shards) for s in ("completed", "skipped", "failed")}
            print(f"{label:<28} {took:7.2f} s   {job.state}, shards {states}", flush=True)
            assert job.state == "completed", job.error
            return took

        run_pipeline(warmup)  # starts Prefect's ephemeral server and imports everything
        full = timed("full run")
        (data / "f04242.txt").write_text("changed\n")
        one = timed("re-run, 1 file changed")
        none = timed("re-run, nothing changed")
        print(f"ratio re-run / full run: {one / full:.1%} (1 changed file), {none / full:.1%} (nothing changed)")
        print(f"{args.files} files, batch_size {args.batch}, {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
