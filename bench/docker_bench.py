"""Per-shard overhead of the docker executor beside a raw `docker run` through the SDK.

For N shards of the busybox test image running `sh -c 'echo hello'`, two ways in one process:
- raw:    `client.containers.run(image, cmd, remove=True)` with the same mounts, user and
          `network_mode="none"` as the executor gives a shard (so both pay the same engine work)
- bflow:  `DockerExecutor().run(execution)`: create, attach, start, wait, remove, with
          stdout and stderr streamed into files
The two alternate shard by shard, so a busy machine slows both alike. Prints the time per
shard of each and their ratio (aim: bflow/raw within 1.2).

    python bench/docker_bench.py [N ...]     (default: 20)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from bacalhau_flow.executors import Execution
from bacalhau_flow.executors.docker import DockerExecutor, engine
from bacalhau_flow.testing.docker_image import ensure_test_image

CMD = ["sh", "-c", "echo hello"]


def shard_dir(root: Path) -> Execution:
    inputs, outputs = root / "inputs", root / "outputs"
    (inputs / "in").mkdir(parents=True, exist_ok=True)
    outputs.mkdir(exist_ok=True)
    (inputs / "in" / "data.txt").write_text("x\n")
    return Execution(cmd=CMD, inputs_dir=inputs, outputs_dir=outputs, stdout_path=root / "stdout",
                     stderr_path=root / "stderr", image=ensure_test_image())


def raw_run(client, ex: Execution) -> float:
    t = time.perf_counter()
    out = client.containers.run(
        ex.image, CMD, remove=True, network_mode="none", user=f"{os.getuid()}:{os.getgid()}",
        volumes={str(ex.inputs_dir): {"bind": "/inputs", "mode": "ro"},
                 str(ex.outputs_dir): {"bind": "/outputs", "mode": "rw"}},
        labels={"bflow.executor": "bench-raw"},
    )
    assert out == b"hello\n"
    return time.perf_counter() - t


def bflow_run(executor: DockerExecutor, ex: Execution) -> float:
    t = time.perf_counter()
    result = executor.run(ex)
    elapsed = time.perf_counter() - t
    assert result.exit_code == 0 and ex.stdout_path.read_bytes() == b"hello\n", ex.stderr_path.read_text()
    return elapsed


def main(sizes: list[int]) -> None:
    client = engine()
    ex = shard_dir(Path(tempfile.mkdtemp(prefix="bflow-docker-bench-")))
    executor = DockerExecutor()
    for _ in range(3):  # warm up: the engine's caches, the client's connections, imports
        raw_run(client, ex)
        bflow_run(executor, ex)
    print(f"{'shards':>7} {'raw s':>8} {'bflow s':>8} {'raw ms/shard':>13} {'bflow ms/shard':>15} {'bflow/raw':>10}")
    for n in sizes:
        raw = bflow = 0.0
        for _ in range(n):
            raw += raw_run(client, ex)
            bflow += bflow_run(executor, ex)
        print(f"{n:>7} {raw:>8.2f} {bflow:>8.2f} {1000 * raw / n:>13.1f} {1000 * bflow / n:>15.1f} "
              f"{bflow / raw:>10.2f}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [20])
