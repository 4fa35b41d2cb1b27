"""The executor contract, for the wasm executor: one WASI module per behaviour, written as
WebAssembly text in tests/executors/wat/ and compiled to .wasm binaries by wasmtime."""

from pathlib import Path

import pytest
import wasmtime

from bacalhau_flow.executors.wasm import WasmExecutor
from bacalhau_flow.testing.executor_contract import BEHAVIOURS, ExecutorContract

WAT = Path(__file__).parent / "wat"


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """behaviour -> path of its .wasm binary."""
    out = tmp_path_factory.mktemp("wasm")
    built = {}
    for behaviour in BEHAVIOURS:
        built[behaviour] = out / f"{behaviour}.wasm"
        built[behaviour].write_bytes(wasmtime.wat2wasm((WAT / f"{behaviour}.wat").read_text()))
    return built


class TestWasmExecutorContract(ExecutorContract):
    read_only_inputs_enforced = True  # /inputs is preopened read-only, also for root

    @pytest.fixture
    def executor(self, modules):
        self.modules = modules
        return WasmExecutor()

    def program(self, behaviour):
        return {"cmd": [], "module": str(self.modules[behaviour])}
