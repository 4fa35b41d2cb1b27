"""The wasm executor beyond the shared contract: argv and environment, exit codes, traps,
fuel and memory limits, entrypoints, modules from URLs, and compiling each module once."""

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import wasmtime

from bacalhau_flow.errors import ExecutorError
from bacalhau_flow.executors import Execution, get_executor, wasm_loader
from bacalhau_flow.executors.wasm import EXIT_TRAP, WasmExecutor
from bacalhau_flow.home import bflow_home

WAT = Path(__file__).parent / "wat"


def build(name: str, directory: Path) -> Path:
    """tests/executors/wat/<name>.wat compiled to <directory>/<name>.wasm."""
    path = directory / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm((WAT / f"{name}.wat").read_text()))
    return path


def execution(tmp_path: Path, module: Path | str, **fields) -> Execution:
    work = tmp_path / "work"
    (work / "inputs").mkdir(parents=True, exist_ok=True)
    (work / "outputs").mkdir(exist_ok=True)
    for stream in ("stdout", "stderr"):
        (work / stream).touch()
    return Execution(cmd=fields.pop("cmd", []), inputs_dir=work / "inputs", outputs_dir=work / "outputs",
                     stdout_path=work / "stdout", stderr_path=work / "stderr", module=str(module), **fields)


def run(ex: Execution):
    return WasmExecutor().run(ex)


def test_the_registry_gives_the_wasm_executor():
    assert isinstance(get_executor("wasm"), WasmExecutor)


def test_a_node_offers_wasm_without_importing_wasmtime_until_a_module_runs():
    import subprocess
    import sys

    script = ("import sys\nfrom bacalhau_flow.network.node import offered_executors\n"
              "assert offered_executors(['wasm'])[0] == ['wasm']\nprint('wasmtime' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_hello_world(tmp_path):
    ex = execution(tmp_path, build("hello", tmp_path))
    result = run(ex)
    assert (result.exit_code, result.timed_out, result.error) == (0, False, None)
    assert ex.stdout_path.read_text() == "hello\n"
    assert ex.stderr_path.read_text() == ""


def test_a_text_format_module_runs_as_it_is(tmp_path):
    ex = execution(tmp_path, WAT / "hello.wat")
    assert run(ex).exit_code == 0
    assert ex.stdout_path.read_text() == "hello\n"


def test_reads_an_input_file_and_writes_an_output_file(tmp_path):
    ex = execution(tmp_path, build("copy_input", tmp_path))
    (ex.inputs_dir / "in").mkdir()
    (ex.inputs_dir / "in" / "data.txt").write_bytes(bytes(range(256)) * 100)
    assert run(ex).exit_code == 0, ex.stderr_path.read_text()
    assert (ex.outputs_dir / "copied.txt").read_bytes() == bytes(range(256)) * 100


def test_proc_exit_sets_the_exit_code_and_streams_are_kept(tmp_path):
    ex = execution(tmp_path, build("fail", tmp_path))
    result = run(ex)
    assert (result.exit_code, result.error) == (5, None)
    assert ex.stdout_path.read_text() == "partial\n"
    assert ex.stderr_path.read_text() == "broken\n"


def test_sees_its_environment_and_arguments_and_nothing_of_the_node(tmp_path, monkeypatch):
    monkeypatch.setenv("NODE_SECRET", "do not leak")
    ex = execution(tmp_path, build("printenv", tmp_path), cmd=["--n", "3", "two words"],
                   env={"BFLOW_SHARD_INDEX": "2", "GREETING": "olá"})
    assert run(ex).exit_code == 0, ex.stderr_path.read_text()
    lines = ex.stdout_path.read_text().splitlines()
    env = sorted(line for line in lines if not line.startswith("arg: "))
    assert env == ["BFLOW_INPUTS=/inputs", "BFLOW_OUTPUTS=/outputs", "BFLOW_SHARD_INDEX=2", "GREETING=olá"]
    # argv[0] is the module's file name; cmd holds only the arguments
    assert [line for line in lines if line.startswith("arg: ")] == [
        "arg: printenv.wasm", "arg: --n", "arg: 3", "arg: two words"]


def test_large_output_is_complete_when_run_returns(tmp_path):
    text = "0123456789abcdef\n" * 200_000  # 3.4 MB through stdin and stdout
    ex = execution(tmp_path, build("stdin", tmp_path), stdin=text)
    assert run(ex).exit_code == 0
    assert ex.stdout_path.read_text() == text
    assert [p.name for p in ex.stdout_path.parent.iterdir() if p.name.startswith(".stdin")] == []


@pytest.mark.parametrize("content", [b"\0asm\x01\0\0\0garbage", b"(module (func $f (param i32) (oops)))",
                                     b"\xff\xfe not a module"])
def test_a_module_that_does_not_compile_is_an_executor_error(tmp_path, content):
    module = tmp_path / "broken.wasm"
    module.write_bytes(content)
    with pytest.raises(ExecutorError, match="wasm module broken.wasm does not compile: ") as caught:
        run(execution(tmp_path, module))
    assert "WASI preview 1" in caught.value.hint


def test_a_missing_module_is_an_executor_error(tmp_path):
    with pytest.raises(ExecutorError, match="wasm module not found: .*nowhere.wasm"):
        run(execution(tmp_path, tmp_path / "nowhere.wasm"))


def test_a_module_importing_more_than_wasi_is_an_executor_error(tmp_path):
    with pytest.raises(ExecutorError, match="imports env.host_magic") as caught:
        run(execution(tmp_path, build("foreign_import", tmp_path)))
    assert "wasi_snapshot_preview1" in caught.value.hint


def test_running_out_of_fuel_fails_with_the_reason_in_stderr(tmp_path):
    ex = execution(tmp_path, build("spin", tmp_path), fuel=100_000)
    result = run(ex)
    assert (result.exit_code, result.timed_out) == (EXIT_TRAP, False)
    assert "fuel" in result.error
    assert ex.stderr_path.read_text() == "bflow: wasm trap: all fuel consumed by WebAssembly\n"


def test_enough_fuel_lets_a_module_finish(tmp_path):
    ex = execution(tmp_path, build("hello", tmp_path), fuel=10_000)
    assert run(ex).exit_code == 0
    assert ex.stdout_path.read_text() == "hello\n"


@pytest.mark.parametrize("limit, pages", [(2**20, 16), (3 * 2**20, 48)])
def test_memory_cannot_grow_past_the_memory_limit(tmp_path, limit, pages):
    # the module grows until memory.grow fails, then exits with the pages it got (64 KiB each)
    assert run(execution(tmp_path, build("grow_memory", tmp_path), memory_bytes=limit)).exit_code == pages


def test_a_module_that_needs_more_memory_than_allowed_fails(tmp_path):
    ex = execution(tmp_path, build("big_memory", tmp_path), memory_bytes=2**20)
    result = run(ex)
    assert result.exit_code == EXIT_TRAP
    assert "memory" in result.error
    assert ex.stderr_path.read_text().startswith("bflow: wasm module failed: memory minimum size of 100 pages")


def test_a_trap_fails_with_the_reason_after_the_module_stderr(tmp_path):
    ex = execution(tmp_path, build("unreachable", tmp_path))
    result = run(ex)
    assert result.exit_code == EXIT_TRAP
    assert ex.stderr_path.read_text() == "before\nbflow: wasm trap: wasm `unreachable` instruction executed\n"


def test_a_custom_entrypoint_is_called_instead_of_start(tmp_path):
    ex = execution(tmp_path, build("entrypoints", tmp_path), entrypoint="greet")
    assert run(ex).exit_code == 0
    assert ex.stdout_path.read_text() == "greetings\n"


def test_an_entrypoint_returning_an_i32_gives_the_exit_code(tmp_path):
    assert run(execution(tmp_path, build("entrypoints", tmp_path), entrypoint="answer")).exit_code == 42


@pytest.mark.parametrize("entrypoint, message", [
    ("main", "has no exported function 'main'"),
    ("add", "entrypoint 'add' of entrypoints.wasm takes parameters"),
])
def test_an_unusable_entrypoint_is_an_executor_error(tmp_path, entrypoint, message):
    with pytest.raises(ExecutorError, match=message) as caught:
        run(execution(tmp_path, build("entrypoints", tmp_path), entrypoint=entrypoint))
    assert caught.value.hint == "its exported functions: _start, add, answer, greet"


def test_each_module_is_compiled_once_per_process(tmp_path, monkeypatch):
    compiled = []
    real_compile = wasm_loader._compile
    monkeypatch.setattr(wasm_loader, "_compile", lambda *a: compiled.append(a[0]) or real_compile(*a))
    module = tmp_path / "unique.wat"  # content no other test uses, so no earlier compile is cached
    module.write_text((WAT / "hello.wat").read_text() + f"\n;; {tmp_path}\n")
    for _ in range(3):
        assert run(execution(tmp_path, module)).exit_code == 0
    assert run(execution(tmp_path, module, fuel=1000)).exit_code == 0  # metered code is compiled apart
    assert compiled == [str(module)] * 2


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server over tmp_path/www; yields (base url, list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, requests
    server.shutdown()
    server.server_close()


def test_a_module_from_an_http_url_is_fetched_once_and_cached_by_content(tmp_path, http_server):
    base, root, requests = http_server
    module = build("hello", root)
    url = f"{base}/{module.name}?{tmp_path.name}"  # a url no other test has fetched
    for _ in range(2):
        ex = execution(tmp_path, url)
        assert run(ex).exit_code == 0
        assert ex.stdout_path.read_text() == "hello\n"
    assert requests == [f"/{module.name}?{tmp_path.name}"]
    digest = hashlib.sha256(module.read_bytes()).hexdigest()
    assert (bflow_home() / "cache" / "wasm" / f"{digest}.wasm").read_bytes() == module.read_bytes()


def test_argv0_of_a_url_module_is_its_file_name(tmp_path, http_server):
    base, root, _ = http_server
    build("printenv", root)
    ex = execution(tmp_path, f"{base}/printenv.wasm")
    assert run(ex).exit_code == 0
    assert "arg: printenv.wasm\n" in ex.stdout_path.read_text()


def test_a_url_that_serves_nothing_is_an_executor_error(tmp_path, http_server):
    base, _, _ = http_server
    with pytest.raises(ExecutorError, match=r"cannot fetch wasm module .*/gone.wasm: HTTP 404"):
        run(execution(tmp_path, f"{base}/gone.wasm"))


def test_a_timeout_that_fires_before_the_module_starts_still_stops_it(tmp_path):
    # writing 20 MB of stdin takes longer than the timeout: the timer fires before the call
    ex = execution(tmp_path, build("spin", tmp_path), timeout=1e-6, stdin="x" * 20_000_000)
    result = run(ex)
    assert (result.exit_code, result.timed_out) == (137, True)
    assert ex.stderr_path.read_text() == "bflow: killed after timeout of 1e-06s\n"


def test_a_module_that_ends_before_its_timeout_is_not_timed_out(tmp_path):
    result = run(execution(tmp_path, build("fail", tmp_path), timeout=30))
    assert (result.exit_code, result.timed_out, result.error) == (5, False, None)
