"""The executor contract, for the local executor (commands run by `sh` on the node)."""

import os

import pytest

from bacalhau_flow.executors.local import LocalExecutor
from bacalhau_flow.testing.executor_contract import ExecutorContract

SCRIPTS = {
    "hello": "echo hello",
    "fail": "echo partial; echo broken >&2; exit 5",
    "copy_input": 'cp "$BFLOW_INPUTS/in/data.txt" "$BFLOW_OUTPUTS/copied.txt"',
    "env": 'echo "$GREETING $BFLOW_SHARD_INDEX"',
    "stdin": "cat",
    "spin": "while :; do sleep 0.1; done",
    "write_input": 'echo changed > "$BFLOW_INPUTS/in/data.txt"',
}


class TestLocalExecutorContract(ExecutorContract):
    # Inputs are made read-only by file modes, which root ignores (the local executor is for
    # trusted commands; docker and wasm enforce it).
    read_only_inputs_enforced = os.geteuid() != 0

    @pytest.fixture
    def executor(self):
        return LocalExecutor()

    def program(self, behaviour):
        return {"cmd": ["sh", "-c", SCRIPTS[behaviour]]}
