"""The docker executor beyond the contract: images, isolation, limits, clean-up, GPUs."""

import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bacalhau_flow.errors import ExecutorError
from bacalhau_flow.executors import Execution
from bacalhau_flow.testing.docker_image import ensure_test_image

MARKER = "reached-the-host"


@pytest.fixture(scope="module")
def image():
    return ensure_test_image()


@pytest.fixture
def executor(image):
    from bacalhau_flow.executors.docker import DockerExecutor

    return DockerExecutor()


def make(tmp_path: Path, image: str, script: str, **fields) -> Execution:
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    (inputs / "in").mkdir(parents=True, exist_ok=True)
    outputs.mkdir(exist_ok=True)
    data = inputs / "in" / "data.txt"
    if not data.exists():
        data.write_text("original\n")
        data.chmod(0o444)
        (inputs / "in").chmod(0o555)
    return Execution(cmd=["sh", "-c", script], inputs_dir=inputs, outputs_dir=outputs, image=image,
                     stdout_path=tmp_path / "stdout", stderr_path=tmp_path / "stderr", **fields)


def containers_of(job: str) -> list:
    from bacalhau_flow.executors.docker import engine

    return engine().containers.list(all=True, filters={"label": f"bflow.job={job}"})


def test_an_image_that_does_not_exist_fails_with_its_name_and_a_hint(executor, tmp_path):
    missing = f"bflow-test/no-such-image-{uuid.uuid4().hex[:8]}:1"
    with pytest.raises(ExecutorError) as err:
        executor.run(make(tmp_path, missing, "true"))
    assert missing in str(err.value) and "cannot be pulled" in str(err.value)
    assert "docker load" in err.value.hint


def test_a_second_shard_of_an_image_that_cannot_be_pulled_fails_without_pulling_again(executor, tmp_path):
    missing = f"bflow-test/no-such-image-{uuid.uuid4().hex[:8]}:1"
    from bacalhau_flow.executors.docker import _pulls

    with pytest.raises(ExecutorError) as first:
        executor.run(make(tmp_path, missing, "true"))
    remembered = _pulls._failed[missing]  # (when, error): stored again only after a pull failed
    with pytest.raises(ExecutorError) as second:
        executor.run(make(tmp_path, missing, "true"))
    assert _pulls._failed[missing] is remembered  # the remembered failure, not a new pull
    assert str(second.value) == str(first.value) and second.value.hint == first.value.hint
    assert second.value is not first.value  # an error of its own: the first one's frames are not kept


def test_writing_to_inputs_fails_and_leaves_them_unchanged(executor, image, tmp_path):
    ex = make(tmp_path, image, "echo changed > /inputs/in/data.txt")
    result = executor.run(ex)
    assert result.exit_code != 0
    assert "Read-only file system" in ex.stderr_path.read_text()
    assert (ex.inputs_dir / "in" / "data.txt").read_text() == "original\n"


def test_outputs_belong_to_the_node_user_so_the_node_can_remove_them(executor, image, tmp_path):
    ex = make(tmp_path, image, "cat /inputs/in/data.txt > /outputs/copy; id -u")
    assert executor.run(ex).exit_code == 0, ex.stderr_path.read_text()
    assert ex.stdout_path.read_text() == f"{os.getuid()}\n"
    assert (ex.outputs_dir / "copy").stat().st_uid == os.getuid()


@pytest.mark.skipif(os.geteuid() != 0, reason="handing the outputs folder to another uid needs root")
def test_a_non_root_node_user_reads_read_only_inputs_and_owns_its_outputs(image, tmp_path):
    from bacalhau_flow.executors.docker import DockerExecutor

    ex = make(tmp_path, image, "cat /inputs/in/data.txt > /outputs/copy")
    os.chown(ex.outputs_dir, 4321, 4321)  # as a node running as uid 4321 would have made it
    result = DockerExecutor(user="4321:4321").run(ex)
    assert result.exit_code == 0, ex.stderr_path.read_text()
    assert (ex.outputs_dir / "copy").read_text() == "original\n"
    assert (ex.outputs_dir / "copy").stat().st_uid == 4321


def test_stdout_and_stderr_stay_apart_when_interleaved(executor, image, tmp_path):
    ex = make(tmp_path, image, "for i in $(seq 1 3000); do echo out$i; echo err$i >&2; done")
    assert executor.run(ex).exit_code == 0
    assert ex.stdout_path.read_text() == "".join(f"out{i}\n" for i in range(1, 3001))
    assert ex.stderr_path.read_text() == "".join(f"err{i}\n" for i in range(1, 3001))


def test_without_stdin_a_command_reading_it_sees_it_empty(executor, image, tmp_path):
    ex = make(tmp_path, image, "cat; echo end", timeout=20)
    result = executor.run(ex)
    assert result.exit_code == 0 and not result.timed_out
    assert ex.stdout_path.read_text() == "end\n"


def test_a_command_missing_from_the_image_exits_127_with_the_reason(executor, image, tmp_path):
    ex = make(tmp_path, image, "")
    ex.cmd = ["no-such-command", "x"]
    result = executor.run(ex)
    assert result.exit_code == 127
    assert "no-such-command" in ex.stderr_path.read_text()


# -- network ------------------------------------------------------------------------------
@pytest.fixture
def host_server():
    """An HTTP server on every address of this host; yields its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = MARKER.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


FETCH = 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 {host} {port}'


def gateway(executor, image, tmp_path) -> str:
    """The host's address on the docker bridge, as a container with a network sees it."""
    ex = make(tmp_path / "gw", image, "ip route | awk '/default/ {print $3}'", network="full")
    assert executor.run(ex).exit_code == 0, ex.stderr_path.read_text()
    return ex.stdout_path.read_text().strip()


def test_with_network_full_a_container_reaches_the_host(executor, image, tmp_path, host_server):
    host = gateway(executor, image, tmp_path)
    ex = make(tmp_path, image, FETCH.format(host=host, port=host_server), network="full")
    executor.run(ex)
    assert MARKER in ex.stdout_path.read_text(), ex.stderr_path.read_text()


def test_with_network_none_a_container_reaches_nothing(executor, image, tmp_path, host_server):
    host = gateway(executor, image, tmp_path)
    ex = make(tmp_path, image, FETCH.format(host=host, port=host_server) + "; ip route", network="none")
    executor.run(ex)
    assert MARKER not in ex.stdout_path.read_text()
    assert "Network is unreachable" in ex.stderr_path.read_text()


# -- limits -------------------------------------------------------------------------------
READ_LIMITS = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; "
               "if [ -e /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/cpu.max; "
               "else echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us); fi")


def test_cpu_and_memory_limits_are_applied(executor, image, tmp_path):
    ex = make(tmp_path, image, READ_LIMITS, cpu=0.5, memory_bytes=64 * 2**20)
    assert executor.run(ex).exit_code == 0, ex.stderr_path.read_text()
    memory, cpu = ex.stdout_path.read_text().splitlines()
    assert int(memory) == 64 * 2**20
    quota, period = (int(x) for x in cpu.split())
    assert quota / period == 0.5


def test_a_memory_limit_docker_refuses_is_a_clear_error(executor, image, tmp_path):
    with pytest.raises(ExecutorError, match="cannot create a container.*[Mm]inimum memory"):
        executor.run(make(tmp_path, image, "true", memory_bytes=1024))


def test_gpus_become_a_device_request_for_exactly_those_devices(tmp_path):
    # No GPU on this machine: this checks the options handed to the engine, not a GPU run.
    from bacalhau_flow.executors.docker import container_options

    ex = make(tmp_path, "img", "nvidia-smi", gpus=[0, 2])
    _, host = container_options(ex, "0:0")
    (request,) = host["device_requests"]
    assert request["DeviceIDs"] == ["0", "2"] and request["Capabilities"] == [["gpu"]]
    assert request["Count"] == 0  # exactly the ids, not "all" or a count
    _, host = container_options(make(tmp_path, "img", "true"), "0:0")
    assert "device_requests" not in host


# -- clean-up -----------------------------------------------------------------------------
def test_no_container_is_left_after_a_run(executor, image, tmp_path):
    job = uuid.uuid4().hex
    ex = make(tmp_path, image, "echo done", env={"BFLOW_JOB_ID": job})
    assert executor.run(ex).exit_code == 0
    assert containers_of(job) == []


def run_in_background(executor, ex):
    done = []
    thread = threading.Thread(target=lambda: done.append(executor.run(ex)), daemon=True)
    thread.start()
    return thread, done


def wait_for_container(job: str) -> None:
    deadline = time.monotonic() + 15
    while not containers_of(job):
        assert time.monotonic() < deadline, "the container never appeared"
        time.sleep(0.1)


def test_no_container_is_left_after_a_timeout(executor, image, tmp_path):
    job = uuid.uuid4().hex
    ex = make(tmp_path, image, "while :; do sleep 0.1; done", env={"BFLOW_JOB_ID": job}, timeout=2.0)
    thread, done = run_in_background(executor, ex)
    wait_for_container(job)  # it runs, labelled; so the check below can fail
    thread.join(timeout=20)
    assert done and done[0].timed_out
    assert "bflow: killed after timeout of 2s" in ex.stderr_path.read_text()
    assert containers_of(job) == []


def test_kill_returns_at_once_and_no_container_is_left(executor, image, tmp_path):
    job = uuid.uuid4().hex
    ex = make(tmp_path, image, "while :; do sleep 0.1; done", env={"BFLOW_JOB_ID": job})
    thread, done = run_in_background(executor, ex)
    wait_for_container(job)
    started = time.monotonic()
    executor.kill()
    assert time.monotonic() - started < 0.5  # a node calls kill() on its event loop
    thread.join(timeout=20)
    assert done and done[0].exit_code != 0 and not done[0].timed_out
    assert containers_of(job) == []


# A node of its own: runs `sh -c SCRIPT` in IMAGE with the docker executor, for job JOB, in WORK.
NODE = """
import sys
from pathlib import Path
from bacalhau_flow.executors import Execution
from bacalhau_flow.executors.docker import DockerExecutor
image, job, work, script = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
DockerExecutor().run(Execution(cmd=["sh", "-c", script], image=image, env={"BFLOW_JOB_ID": job},
                               inputs_dir=work / "inputs", outputs_dir=work / "outputs",
                               stdout_path=work / "stdout", stderr_path=work / "stderr"))
"""


def test_no_container_is_left_by_a_node_killed_by_sigkill(image, tmp_path):
    """The node (here a process of its own) dies with no chance to remove its container."""
    import signal

    job = uuid.uuid4().hex
    make(tmp_path, image, "")
    node = subprocess.Popen([sys.executable, "-c", NODE, image, job, str(tmp_path), "sleep 300"],
                            start_new_session=True)
    try:
        wait_for_container(job)
        deadline = time.monotonic() + 15
        while containers_of(job)[0].status != "running":
            assert time.monotonic() < deadline, "the container never ran"
            time.sleep(0.1)
        os.kill(node.pid, signal.SIGKILL)
        node.wait()
    finally:
        node.kill()
    deadline = time.monotonic() + 15
    while containers_of(job) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert containers_of(job) == [], "the killed node's container is still there"


# -- a node without an engine -------------------------------------------------------------
def test_a_node_without_an_engine_does_not_offer_docker(tmp_path):
    script = (
        "from bacalhau_flow.network.node import offered_executors\n"
        "from bacalhau_flow.executors import get_executor\n"
        "from bacalhau_flow.errors import ExecutorError\n"
        "assert offered_executors(['local', 'docker'])[0] == ['local']\n"
        "try:\n    get_executor('docker')\nexcept ExecutorError as e:\n    print(e.message, '|', e.hint)\n"
    )
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "cannot reach the Docker engine at unix://" in r.stdout and "dockerd" in r.stdout


def test_a_socket_nothing_listens_on_is_no_engine_and_needs_no_docker_sdk(tmp_path):
    import socket

    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as bound:  # bound, never listening: connections are refused
        bound.bind(str(path))
        script = (
            "import sys\n"
            "from bacalhau_flow.network.node import offered_executors\n"
            "assert offered_executors(['local', 'docker'])[0] == ['local'] and 'docker' in offered_executors(['docker'])[1]\n"
            "from bacalhau_flow.executors.docker import engine\n"
            "try:\n    engine()\nexcept Exception as e:\n    print(e.message)\n"
            "print('docker' in sys.modules)\n"
        )
        env = {**os.environ, "DOCKER_HOST": f"unix://{path}"}
        r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert r.returncode == 0, r.stderr
    message, imported = r.stdout.strip().splitlines()
    assert message == f"cannot reach the Docker engine at unix://{path}: nothing listens on {path}"
    assert imported == "False"
