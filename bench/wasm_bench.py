"""Per-shard overhead of the wasm executor beside calling wasmtime directly, in one process.

The same module (tests/executors/wat/hello.wat, compiled to .wasm) run N times two ways:
- direct:   one engine and one compiled module for all runs; per run a Store, a WasiConfig
            with stdout and stderr to files, a Linker with WASI, instantiate, call _start.
            The least a host must do per run.
- executor: `WasmExecutor().run(Execution(...))` per run, as a node calls it: a fresh engine
            per run (so a timeout or kill interrupts only that run), the compiled module
            deserialized into it from the per-process cache, /inputs and /outputs preopened,
            the memory limit of the default resources (256 MiB), the entrypoint checked.
Both write into the same work directory; the first run of each is a warm-up (it compiles).
Each N is timed REPEATS times, the two ways taking turns, and the best time of each is kept
(as timeit does): the machine is shared, and the best run is the least disturbed one.

    python bench/wasm_bench.py [N ...]     (default: 100 1000)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BFLOW_HOME", tempfile.mkdtemp(prefix="bflow-bench-"))

import wasmtime  # noqa: E402

from bacalhau_flow.executors import Execution  # noqa: E402
from bacalhau_flow.executors.wasm import WasmExecutor  # noqa: E402

REPEATS = 5
WAT = Path(__file__).resolve().parents[1] / "tests" / "executors" / "wat" / "hello.wat"


def work_dir(root: Path) -> Execution:
    for sub in ("inputs", "outputs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stream in ("stdout", "stderr"):
        (root / stream).touch()
    return Execution(cmd=[], inputs_dir=root / "inputs", outputs_dir=root / "outputs",
                     stdout_path=root / "stdout", stderr_path=root / "stderr",
                     module=str(root.parent / "hello.wasm"), memory_bytes=256 * 2**20)


def direct(n: int, ex: Execution) -> float:
    engine = wasmtime.Engine()
    module = wasmtime.Module(engine, Path(ex.module).read_bytes())
    t = time.perf_counter()
    for _ in range(n):
        store = wasmtime.Store(engine)
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["hello.wasm"]
        wasi.stdout_file = str(ex.stdout_path)
        wasi.stderr_file = str(ex.stderr_path)
        store.set_wasi(wasi)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        linker.instantiate(store, module).exports(store)["_start"](store)
    return time.perf_counter() - t


def executor(n: int, ex: Execution) -> float:
    t = time.perf_counter()
    for _ in range(n):
        assert WasmExecutor().run(ex).exit_code == 0
    return time.perf_counter() - t


def main(sizes: list[int]) -> None:
    root = Path(tempfile.mkdtemp(prefix="bflow-wasm-bench-"))
    (root / "hello.wasm").write_bytes(wasmtime.wat2wasm(WAT.read_text()))
    ex = work_dir(root / "work")
    direct(1, ex)
    executor(1, ex)
    assert ex.stdout_path.read_text() == "hello\n"
    print(f"{'runs':>6} {'direct s':>9} {'executor s':>11} {'direct ms/run':>14} {'executor ms/run':>16} "
          f"{'overhead ms/run':>16} {'executor/direct':>16}")
    for n in sizes:
        d = e = float("inf")
        for _ in range(REPEATS):
            d = min(d, direct(n, ex))
            e = min(e, executor(n, ex))
        print(f"{n:>6} {d:>9.3f} {e:>11.3f} {1000 * d / n:>14.3f} {1000 * e / n:>16.3f} "
              f"{1000 * (e - d) / n:>16.3f} {e / d:>16.2f}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000])
