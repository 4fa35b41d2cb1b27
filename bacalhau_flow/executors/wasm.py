"""The wasm executor: a WASI preview 1 module run in-process by wasmtime.

What the module sees (PRODUCT.md section 2):
- `/inputs` preopened read-only (the shard's staged inputs), `/outputs` preopened writable;
- argv: the module's file name, then `cmd` (so `cmd` holds only the arguments; argv[0] is
  the module's name, as `wasmtime run` and Bacalhau's wasm executor give it; there is no shell);
- environment: `execution.env` (BFLOW_* and transform.env) plus BFLOW_INPUTS=/inputs and
  BFLOW_OUTPUTS=/outputs, and nothing of the node's own environment;
- stdin: `execution.stdin`, or empty; stdout and stderr go straight into the execution's files;
- no network: WASI preview 1 has no sockets, whatever `network` says.

How it ends:
- the entrypoint returns: exit code 0 (or the i32 it returns, if it returns one);
- `proc_exit(n)`: exit code n;
- a trap (unreachable, out of bounds, out of fuel, ...), or a module that cannot be
  instantiated within its limits (memory): exit code 134, as the wasmtime CLI reports a trap,
  with the reason appended to stderr;
- a timeout or `kill()`: exit code 137 (as a killed process), by epoch interruption. Each run
  has an engine of its own, so interrupting it touches no other run. Code blocked inside a
  host call (a WASI sleep) is interrupted only when it returns to wasm.

Limits: `memory_bytes` caps each linear memory (memory.grow fails beyond it); `fuel`, when
set, is the number of wasmtime fuel units (about one per wasm instruction) the run may use.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import threading
from typing import TYPE_CHECKING

from ..errors import ExecutorError
from .base import Execution, ExecutionResult, Executor

if TYPE_CHECKING:
    import wasmtime

    from .wasm_loader import LoadedModule

# wasmtime (~75 ms to import) is imported by the first run, not when a node starts and
# constructs its executors: most nodes of a process never run a wasm shard.

INPUTS, OUTPUTS = "/inputs", "/outputs"
EXIT_TRAP = 134  # 128 + SIGABRT, what `wasmtime run` exits with on a trap
EXIT_KILLED = 137  # 128 + SIGKILL


class _Interrupt:
    """Stops one run from another thread: remembers why, then bumps its engine's epoch."""

    def __init__(self, engine: wasmtime.Engine):
        self.engine = engine
        self.reason: str | None = None

    def __call__(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.engine.increment_epoch()


class WasmExecutor(Executor):
    name = "wasm"

    def __init__(self) -> None:
        if importlib.util.find_spec("wasmtime") is None:  # a node without it does not offer wasm
            raise ExecutorError("the wasm executor cannot be loaded: the wasmtime package is not installed",
                                hint="pip install wasmtime")
        self._running: set[_Interrupt] = set()
        self._lock = threading.Lock()

    def run(self, execution: Execution) -> ExecutionResult:
        if not execution.module:
            raise ExecutorError("the wasm executor needs a module", hint="set transform.module")
        from .wasm_loader import load_module

        loaded = load_module(execution.module, metered=execution.fuel is not None)
        _check_entrypoint(loaded, execution.entrypoint)
        interrupt = _Interrupt(loaded.engine)
        timer = None
        if execution.timeout is not None:
            timer = threading.Timer(execution.timeout, interrupt, args=("timeout",))
            timer.daemon = True
            timer.start()
        with self._lock:
            self._running.add(interrupt)
        stdin = _stdin_file(execution)
        try:
            # The store, and with it the module's stdout and stderr, is gone when _call returns.
            code, error = _call(loaded, execution, stdin, interrupt)
        finally:
            if timer:
                timer.cancel()
            with self._lock:
                self._running.discard(interrupt)
            if stdin:
                os.unlink(stdin)
        # An interrupt ends the call as a trap; a call that ended by itself first was not interrupted.
        if error and interrupt.reason == "timeout":
            return _ended(execution, EXIT_KILLED, f"killed after timeout of {execution.timeout:g}s",
                          timed_out=True)
        if error and interrupt.reason:
            return _ended(execution, EXIT_KILLED, "killed")
        if error:
            return _ended(execution, code, error)
        return ExecutionResult(exit_code=code)

    def kill(self) -> None:
        with self._lock:
            running = list(self._running)
        for interrupt in running:
            interrupt("killed")


def _call(loaded: LoadedModule, execution: Execution, stdin: str | None,
          interrupt: _Interrupt) -> tuple[int, str | None]:
    """Instantiate and call the entrypoint: (exit code, why it trapped or None)."""
    import wasmtime

    store = wasmtime.Store(loaded.engine)
    if execution.memory_bytes:
        store.set_limits(memory_size=execution.memory_bytes)
    if execution.fuel is not None:
        store.set_fuel(execution.fuel)
    store.set_epoch_deadline(1)  # the first epoch increment (timeout or kill) stops it
    if interrupt.reason:  # interrupted before the deadline was set: that increment is missed
        return EXIT_KILLED, interrupt.reason
    store.set_wasi(_wasi_config(execution, loaded.name, stdin))
    linker = wasmtime.Linker(loaded.engine)
    linker.define_wasi()
    try:
        instance = linker.instantiate(store, loaded.module)
        returned = instance.exports(store)[execution.entrypoint](store)
    except wasmtime.ExitTrap as e:
        return e.code, None
    except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
        return EXIT_TRAP, _reason(e)
    return (returned if isinstance(returned, int) else 0), None


def _check_entrypoint(loaded: LoadedModule, entrypoint: str) -> None:
    hint = f"its exported functions: {', '.join(sorted(loaded.functions)) or 'none'}"
    if entrypoint not in loaded.functions:
        raise ExecutorError(f"wasm module {loaded.name} has no exported function {entrypoint!r}", hint=hint)
    if loaded.functions[entrypoint]:
        raise ExecutorError(f"wasm entrypoint {entrypoint!r} of {loaded.name} takes parameters; "
                            "it must take none", hint=hint)


def _wasi_config(execution: Execution, argv0: str, stdin: str | None) -> wasmtime.WasiConfig:
    import wasmtime

    wasi = wasmtime.WasiConfig()
    wasi.argv = [argv0, *execution.cmd]
    env = {**execution.env, "BFLOW_INPUTS": INPUTS, "BFLOW_OUTPUTS": OUTPUTS}
    wasi.env = list(env.items())
    wasi.stdout_file = str(execution.stdout_path)
    wasi.stderr_file = str(execution.stderr_path)
    if stdin:
        wasi.stdin_file = stdin
    wasi.preopen_dir(str(execution.inputs_dir), INPUTS, fs_mutable=False)
    wasi.preopen_dir(str(execution.outputs_dir), OUTPUTS)
    return wasi


def _stdin_file(execution: Execution) -> str | None:
    """WASI reads stdin from a file: the text goes to a temporary one beside stdout."""
    if execution.stdin is None:
        return None
    fd, path = tempfile.mkstemp(dir=execution.stdout_path.parent, prefix=".stdin-")
    with os.fdopen(fd, "w") as f:
        f.write(execution.stdin)
    return path


def _ended(execution: Execution, code: int, reason: str, timed_out: bool = False) -> ExecutionResult:
    """Append `bflow: <reason>` to stderr, on a line of its own."""
    with open(execution.stderr_path, "ab+") as err:
        if err.seek(0, os.SEEK_END):
            err.seek(-1, os.SEEK_END)
            if err.read(1) != b"\n":
                err.write(b"\n")
        err.write(f"bflow: {reason}\n".encode())
    return ExecutionResult(exit_code=code, timed_out=timed_out, error=reason)


def _reason(error: Exception) -> str:
    """wasmtime's cause without its backtrace: "wasm trap: all fuel consumed by WebAssembly"."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if "Caused by:" in lines:
        lines = lines[lines.index("Caused by:") + 1:]
    reason = "; ".join(lines) or type(error).__name__
    return reason if reason.startswith("wasm trap") else f"wasm module failed: {reason}"
