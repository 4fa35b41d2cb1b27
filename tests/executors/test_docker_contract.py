"""The executor contract, for the docker executor (commands run by busybox `sh` in the test image)."""

import pytest

from bacalhau_flow.testing.docker_image import ensure_test_image
from bacalhau_flow.testing.executor_contract import ExecutorContract

SCRIPTS = {
    "hello": "echo hello",
    "fail": "echo partial; echo broken >&2; exit 5",
    "copy_input": "cp /inputs/in/data.txt /outputs/copied.txt",
    "env": 'echo "$GREETING $BFLOW_SHARD_INDEX"',
    "stdin": "cat",
    "spin": "while :; do sleep 0.1; done",
    "write_input": "echo changed > /inputs/in/data.txt",
}


class TestDockerExecutorContract(ExecutorContract):
    @pytest.fixture
    def executor(self):
        image = ensure_test_image()
        from bacalhau_flow.executors.docker import DockerExecutor

        self.image = image
        return DockerExecutor()

    def program(self, behaviour):
        return {"cmd": ["sh", "-c", SCRIPTS[behaviour]], "image": self.image}
