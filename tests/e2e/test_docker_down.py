"""A Docker engine that does not answer: the nodes say why they cannot offer docker, and a
docker shard fails naming the engine, in `bflow run`'s summary and in `bflow logs`."""

import gc
import json
import subprocess
import sys
import weakref

from cli_helpers import bflow, bflow_process, write_spec

from bacalhau_flow.errors import ExecutorError
from bacalhau_flow.executors import docker as docker_executor
from bacalhau_flow.network.node import offered_executors


def test_a_node_announces_why_it_cannot_offer_docker(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setattr("bacalhau_flow.executors.docker._engine", None)  # no client made earlier
    monkeypatch.setattr("bacalhau_flow.executors.docker._engine_failure", None)
    monkeypatch.setattr("bacalhau_flow.executors.docker._engine_checked", None)
    offered, unavailable = offered_executors(["local", "docker"])
    assert offered == ["local"]
    assert unavailable == {"docker": f"cannot reach the Docker engine at unix://{tmp_path}/no-engine.sock: "
                                     f"there is no socket at {tmp_path}/no-engine.sock"}


class _Asker:
    """Stands for a node: what refers to it while it asks for the engine."""

    def ask(self) -> ExecutorError:
        try:
            docker_executor.check_engine()
        except ExecutorError as e:
            return e
        raise AssertionError("the engine answered")


def test_a_remembered_engine_failure_keeps_nothing_of_those_who_asked(tmp_path, monkeypatch):
    """The failure is remembered for a few seconds, but each asker gets an error of its own:
    re-raising the remembered one would chain every asker's frames onto its traceback and keep
    the nodes (and their jobs) alive."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setattr("bacalhau_flow.executors.docker._engine", None)
    monkeypatch.setattr("bacalhau_flow.executors.docker._engine_failure", None)
    monkeypatch.setattr("bacalhau_flow.executors.docker._engine_checked", None)
    askers = [_Asker() for _ in range(3)]
    errors = [asker.ask() for asker in askers]  # the first finds the socket missing, the rest are told
    assert len({id(e) for e in errors}) == 3 and len({str(e) for e in errors}) == 1
    assert all(e.hint == docker_executor.NO_ENGINE_HINT for e in errors)
    remembered = docker_executor._engine_failure[2]
    assert remembered.__traceback__ is None and all(e is not remembered for e in errors)
    gone = [weakref.ref(asker) for asker in askers]
    del askers, errors
    gc.collect()
    assert [ref() for ref in gone] == [None, None, None]


def test_a_docker_shard_with_no_engine_anywhere_fails_naming_the_engine(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("a\n")
    spec = write_spec(tmp_path, "pipeline: engine-down\ninput: {url: d, glob: '/*'}\n"
                                "transform: {executor: docker, image: busybox, cmd: [cat, /inputs/d/a]}\n")
    socket = f"unix://{tmp_path}/no-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", socket)  # the embedded nodes of a new process: no engine there
    proc = bflow_process("run", spec, "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err.decode()
    job = json.loads(out)
    why = f"cannot reach the Docker engine at {socket}"
    assert job["state"] == "failed" and why in job["error"] and "on any node" in job["error"]
    assert b"Traceback" not in err
    logs = bflow("logs", job["id"])
    assert why in logs.stderr and "hint:" in logs.stderr


def test_an_answering_engine_is_offered_without_importing_the_docker_sdk():
    """An idle node asks the engine with a bare ping; the SDK (~15 MB) waits for a shard."""
    from bacalhau_flow.testing.docker_image import ensure_test_image

    ensure_test_image()  # skips without an engine (fails in CI)
    script = ("import sys\nfrom bacalhau_flow.network.node import offered_executors\n"
              "print(offered_executors(['docker']), 'docker' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(['docker'], {}) False"
