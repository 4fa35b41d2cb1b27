"""The docker executor: the shard's command in a container of `transform.image`.

Decisions:
- The engine is the node's own (`DOCKER_HOST` or the local socket): the shard's work
  directory is bind-mounted, so dockerd must see the node's files. `inputs_dir` is mounted
  read-only at `/inputs` (a read-only mount binds root too), `outputs_dir` at `/outputs`.
- The container runs as the node's uid:gid, so what it writes to `/outputs` belongs to the
  node, which can store and delete it. Inputs are staged mode 0444 (directories 0555), so
  any uid can read them.
- One client per process (made and pinged on first use, shared by every shard and thread);
  a node whose engine does not answer cannot construct this executor, so it does not
  announce `docker`, and says why. A unix socket is asked with a bare `GET /_ping`: an idle
  node never imports the SDK (~15 MB). Each shard then costs five API calls: create, attach, start, wait, remove.
- stdout and stderr come over one attach socket opened before the container starts, so
  nothing is missed and nothing depends on the engine's log driver; frames are demultiplexed
  straight into the two files. `transform.stdin` is written to the same socket, then its
  write side is closed, which closes the command's stdin (the container has StdinOnce).
  Without stdin the command reads an empty stdin, as with the local executor.
- A missing image is pulled once per process, however many shards ask at once; a failed
  pull is remembered for a minute, so a job of many shards does not hammer a registry that
  is not there. An image that cannot be had is an `ExecutorError` naming it.
- A timeout or `kill()` stops the container (SIGTERM, SIGKILL after a grace); the container
  is removed afterwards whatever happened. Containers carry the label `bflow.executor=docker`,
  and `bflow.job` / `bflow.shard` where the shard's environment names them, and `bflow.owner`:
  when the node's process ends, a SIGKILL too, its containers are removed (docker_reaper.py).
- A command that does not exist in the image ends like it does with the local executor:
  exit code 127 (126: not executable) and the reason in stderr, not an error.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from ..errors import ExecutorError
from .base import Execution, ExecutionResult, Executor
from .docker_reaper import owner_labels

log = logging.getLogger("bacalhau_flow.executors.docker")

INPUTS, OUTPUTS = "/inputs", "/outputs"
LABEL = "bflow.executor"
JOB_LABELS = {"bflow.job": "BFLOW_JOB_ID", "bflow.shard": "BFLOW_SHARD_ID"}
KILL_GRACE_SECONDS = 2
PULL_FAILURE_MEMORY_SECONDS = 60.0
POOL_SIZE = 64  # connections to the engine; each running shard holds two (attach and wait)
STDOUT, STDERR = 1, 2

MISSING_IMAGE_HINT = ("check the image name, or put the image on the node with `docker load -i image.tar` "
                      "(or `docker import`) when no registry can be reached")
NO_ENGINE_HINT = ("start dockerd (`bash scripts/docker-engine.sh` does it here) or set DOCKER_HOST; "
                  "the node must be able to use the engine's socket")


def container_options(execution: Execution, user: str) -> tuple[dict, dict]:
    """What the container is made of, as (create_container kwargs, create_host_config kwargs).

    Pure, so tests can check the options (GPUs, limits) where no GPU is at hand."""
    env = dict(execution.env)
    env.update(BFLOW_INPUTS=INPUTS, BFLOW_OUTPUTS=OUTPUTS)
    labels = {LABEL: "docker"}  # and the job and shard, where known, for `docker ps --filter label=...`
    labels.update({label: env[var] for label, var in JOB_LABELS.items() if env.get(var)})
    create = {
        "image": execution.image,
        "command": list(execution.cmd) or None,  # none: the image's own CMD
        "user": user,
        "environment": env,
        "labels": labels,
        "stdin_open": execution.stdin is not None,  # with detach=False this also sets StdinOnce
        "detach": False,
        "use_config_proxy": False,
    }
    host = {
        "binds": {
            str(execution.inputs_dir.resolve()): {"bind": INPUTS, "mode": "ro"},
            str(execution.outputs_dir.resolve()): {"bind": OUTPUTS, "mode": "rw"},
        },
        "network_mode": "bridge" if execution.network == "full" else "none",
    }
    if execution.cpu:
        host["nano_cpus"] = int(execution.cpu * 1e9)
    if execution.memory_bytes:
        host["mem_limit"] = int(execution.memory_bytes)
    if execution.gpus:
        from docker.types import DeviceRequest

        host["device_requests"] = [DeviceRequest(device_ids=[str(g) for g in execution.gpus],
                                                 capabilities=[["gpu"]])]
    return create, host


# -- the engine, once per process -------------------------------------------------------
_engine_lock = threading.Lock()
_engine: tuple[int, object] | None = None  # (pid, docker.DockerClient)
# A failed probe answers for the nodes of this process that start with it (an embedded
# network starts three at once), then the engine is asked again: it may have been started.
ENGINE_FAILURE_MEMORY_SECONDS = 5.0
_engine_failure: tuple[int, float, ExecutorError] | None = None  # (pid, when, the error)
_engine_checked: int | None = None  # pid of the process whose engine answered a bare ping


def engine_url() -> str:
    """Where this process looks for the Docker engine: `DOCKER_HOST`, or the default socket."""
    host = (os.environ.get("DOCKER_HOST") or "").strip()
    return "unix:///var/run/docker.sock" if host in ("", "unix://") else host


def _unix_socket_path() -> str | None:
    """The engine's unix socket (`DOCKER_HOST`, or the default one); None over TCP or SSH."""
    url = engine_url()
    return url.split("://", 1)[1] if url.startswith(("unix://", "http+unix://")) else None


def _unix_socket_unanswered(path: str) -> str | None:
    """Why no engine answers on the unix socket at `path`, asked with a bare `GET /_ping`
    (the Docker SDK costs ~90 ms and ~15 MB to import, more than an idle node needs); None
    when the engine answers OK."""
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(path)
            probe.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = probe.recv(4096)
        except FileNotFoundError:
            return f"there is no socket at {path}"
        except ConnectionRefusedError:
            return f"nothing listens on {path}"
        except PermissionError:
            return f"this user may not use {path}"
        except OSError as e:
            return f"{path}: {e.strerror or e}"
    status = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    if status.split(" ")[1:2] == ["200"]:
        return None
    return f"{path} answers {status or 'nothing'!r}, not as a Docker engine does"


def check_engine() -> None:
    """Raise ExecutorError unless this process's Docker engine answers (once it has, it is
    not asked again). Over a unix socket without the SDK; otherwise by making the client."""
    global _engine_checked, _engine_failure
    with _engine_lock:
        if _engine_checked == os.getpid() or (_engine is not None and _engine[0] == os.getpid()):
            return
        _raise_remembered_failure()
        path = _unix_socket_path()
        if path:
            why = _unix_socket_unanswered(path)
            if why is not None:
                _engine_failure = (os.getpid(), time.monotonic(), _unreachable(why))
                raise _afresh(_engine_failure[2])
            _engine_checked = os.getpid()
            return
    engine()  # TCP or SSH: the SDK asks


def engine():
    """This process's Docker client, made and pinged on first use.
    Raises ExecutorError when no engine answers."""
    global _engine, _engine_failure
    with _engine_lock:
        if _engine is not None and _engine[0] == os.getpid():
            return _engine[1]
        _raise_remembered_failure()
        try:
            client = _connect()
        except ExecutorError as e:
            _engine_failure = (os.getpid(), time.monotonic(), _afresh(e))
            raise
        _engine = (os.getpid(), client)
        return client


def _raise_remembered_failure() -> None:
    """Raise the last failure to reach the engine, if this process had one a moment ago."""
    failure = _engine_failure
    if failure and failure[0] == os.getpid() and time.monotonic() - failure[1] < ENGINE_FAILURE_MEMORY_SECONDS:
        raise _afresh(failure[2])


def _afresh(error: ExecutorError) -> ExecutorError:
    """A copy of a remembered error, without its traceback. Raising the remembered one itself
    would add the raiser's frames to its traceback every time. Those frames hold the nodes and
    executions that asked, and everything they reference, for as long as the error is kept."""
    return ExecutorError(error.message, hint=error.hint, retryable=error.retryable)


def _unreachable(why: object) -> ExecutorError:
    return ExecutorError(f"cannot reach the Docker engine at {engine_url()}: {why}", hint=NO_ENGINE_HINT)


def _connect():
    """A Docker client whose engine answered a ping. Raises ExecutorError when none answers."""
    path = _unix_socket_path()
    if path and (why := _unix_socket_unanswered(path)) is not None:
        raise _unreachable(why)
    import docker
    import requests

    try:
        client = docker.from_env(max_pool_size=POOL_SIZE)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise _unreachable(e) from e
    return client


class _Pulls:
    """Pulls each image at most once at a time per process, and remembers failures a while."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per_image: dict[str, threading.Lock] = {}
        self._failed: dict[str, tuple[float, ExecutorError]] = {}

    def pull(self, client, image: str) -> None:
        with self._lock:
            image_lock = self._per_image.setdefault(image, threading.Lock())
        with image_lock:
            failed = self._failed.get(image)
            if failed and time.monotonic() - failed[0] < PULL_FAILURE_MEMORY_SECONDS:
                raise _afresh(failed[1])
            try:
                _pull(client, image)
            except ExecutorError as e:
                self._failed[image] = (time.monotonic(), _afresh(e))
                raise
            self._failed.pop(image, None)


def _pull(client, image: str) -> None:
    import docker
    from docker.utils import parse_repository_tag

    repository, tag = parse_repository_tag(image)
    log.info("pulling image %s", image)
    try:
        for event in client.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
            if "error" in event:  # errors in the middle of a pull come as events, not statuses
                raise docker.errors.APIError(event["error"])
    except docker.errors.APIError as e:
        raise ExecutorError(f"image {image!r} is not on this node and cannot be pulled: "
                            f"{e.explanation or e}", hint=MISSING_IMAGE_HINT) from e


_pulls = _Pulls()


# -- the executor -------------------------------------------------------------------------
@dataclass
class _Run:
    """One container's life, as `run`, the timeout timer and `kill()` see it."""

    container: str | None = None
    stopping: bool = False  # kill() or the timeout asked it to stop
    timed_out: bool = False


class DockerExecutor(Executor):
    name = "docker"

    def __init__(self, user: str | None = None) -> None:
        check_engine()  # raises ExecutorError: a node without an engine has no docker
        self.user = user or f"{os.getuid()}:{os.getgid()}"
        self._runs: list[_Run] = []
        self._lock = threading.Lock()

    @property
    def client(self):
        """The Docker SDK's client, made when the first shard runs (not when the node starts)."""
        return engine()

    def run(self, execution: Execution) -> ExecutionResult:
        if not execution.image:
            raise ExecutorError("the docker executor needs an image", hint="set transform.image")
        run = _Run()
        with self._lock:
            self._runs.append(run)
        try:
            with open(execution.stdout_path, "wb") as out, open(execution.stderr_path, "wb") as err:
                return self._run(execution, run, out, err)
        finally:
            with self._lock:
                self._runs.remove(run)
            if run.container:
                self._remove(run.container)

    def kill(self) -> None:
        """Stop every container this executor runs, without waiting (the caller may be an event
        loop); `run` then returns a failed result and removes the container."""
        with self._lock:
            runs = list(self._runs)
            for run in runs:
                run.stopping = True
        for run in runs:
            if run.container:
                threading.Thread(target=self._stop, args=(run.container,), daemon=True).start()

    # -- one run ------------------------------------------------------------------------
    def _run(self, execution: Execution, run: _Run, out, err) -> ExecutionResult:
        import docker

        create, host = container_options(execution, self.user)
        create["labels"].update(owner_labels(_unix_socket_path()))  # ended with this process
        api = self.client.api
        created = self._create(api, create, host, execution.image)
        with self._lock:
            run.container = created
            if run.stopping:
                err.write(b"bflow: cancelled before it started\n")
                return ExecutionResult(exit_code=137, error="cancelled before it started")
        params = {"stdout": 1, "stderr": 1, "stream": 1, "stdin": int(execution.stdin is not None)}
        sock = api.attach_socket(created, params=params)
        try:
            try:
                api.start(created)
            except docker.errors.APIError as e:
                return _not_started(execution, e, err)
            if execution.stdin is not None:
                threading.Thread(target=_feed_stdin, args=(sock, execution.stdin), daemon=True).start()
            timer = None
            if execution.timeout:
                timer = threading.Timer(execution.timeout, self._expire, args=(run,))
                timer.daemon = True
                timer.start()
            try:
                _copy_streams(sock, out, err)
            finally:
                if timer:
                    timer.cancel()
            code = api.wait(created)["StatusCode"]
        finally:
            _close(sock)
        if run.timed_out:
            err.write(f"\nbflow: killed after timeout of {execution.timeout:g}s\n".encode())
            return ExecutionResult(exit_code=code or 137, timed_out=True,
                                   error=f"timed out after {execution.timeout:g}s")
        if run.stopping:
            return ExecutionResult(exit_code=code or 137, error="stopped (cancelled)")
        return ExecutionResult(exit_code=code)

    def _create(self, api, create: dict, host: dict, image: str) -> str:
        import docker

        for attempt in (1, 2):
            try:
                return api.create_container(host_config=api.create_host_config(**host), **create)["Id"]
            except docker.errors.ImageNotFound:
                if attempt == 2:  # pulled, yet gone again
                    raise ExecutorError(f"image {image!r} vanished from this node after it was pulled",
                                        hint=MISSING_IMAGE_HINT, retryable=True) from None
                _pulls.pull(self.client, image)
            except docker.errors.APIError as e:
                raise ExecutorError(f"cannot create a container of {image!r}: {e.explanation or e}",
                                    hint="check transform.image and resources", retryable=e.is_server_error()) from e
        raise AssertionError("unreachable")

    def _expire(self, run: _Run) -> None:
        with self._lock:
            run.timed_out = run.stopping = True
        if run.container:
            self._stop(run.container)

    def _stop(self, container: str) -> None:
        import docker

        try:
            self.client.api.stop(container, timeout=KILL_GRACE_SECONDS)
        except docker.errors.APIError as e:  # gone already, or being removed
            log.debug("stopping container %s: %s", container, e)

    def _remove(self, container: str) -> None:
        import docker

        try:
            self.client.api.remove_container(container, v=True, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            log.warning("could not remove container %s: %s", container[:12], e)


# -- streams ------------------------------------------------------------------------------
def _copy_streams(sock, out, err) -> None:
    """Demultiplex the attach stream into the stdout and stderr files until the container ends."""
    from docker.utils.socket import frames_iter

    files = {STDOUT: out, STDERR: err}
    for stream, data in frames_iter(sock, tty=False):
        target = files.get(stream)
        if target is not None:
            target.write(data)
            target.flush()  # readers (logs, tests) see output as it comes


def _feed_stdin(sock, text: str) -> None:
    raw = getattr(sock, "_sock", sock)  # the socket under the SocketIO that docker returns
    try:
        raw.sendall(text.encode())
        raw.shutdown(socket.SHUT_WR)  # EOF: the engine closes the command's stdin
    except OSError:
        pass  # the command ended without reading it all


def _close(sock) -> None:
    raw = getattr(sock, "_sock", sock)
    for close in (sock.close, raw.close):
        try:
            close()
        except OSError:
            pass


def _not_started(execution: Execution, e, err) -> ExecutionResult:
    """A container that cannot start: a missing or non-executable command is the command's
    failure (127/126, as a shell reports it); anything else is the executor's."""
    reason = str(e.explanation or e)
    _, found, exec_reason = reason.partition("exec: ")  # runc: 'exec: "x": executable file not found ...'
    if found and ("executable file not found" in exec_reason or "no such file or directory" in exec_reason):
        code, message = 127, f"command not found: {exec_reason.removesuffix(': unknown')}"
    elif found and "permission denied" in exec_reason:
        code, message = 126, f"permission denied: {exec_reason.removesuffix(': unknown')}"
    else:
        raise ExecutorError(f"cannot start a container of {execution.image!r}: {reason}",
                            hint="the engine's reason is above; check the image, cmd and resources") from e
    err.write(f"bflow: {message}\n".encode())
    return ExecutionResult(exit_code=code, error=message)
