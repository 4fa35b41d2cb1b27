"""Wasm pipelines end to end on a 3-node devstack, over every transport: `bflow run` sends
the module's absolute path to the nodes, and `bflow get` brings back outputs, streams and
exit codes, also of a failing module."""

from pathlib import Path

import pytest
import wasmtime
from cli_helpers import bflow, write_spec

WAT = Path(__file__).parents[1] / "executors" / "wat"
LINES = "apple 3\nbanana 12\n"

# name -> (module, extra transform lines, exit code, stdout, stderr, (output file, content))
SCENARIOS = {
    "hello to stdout": ("hello", "", 0, "hello\n", "", None),
    "copy input to outputs": ("copy_input", "", 0, "", "", ("copied.txt", LINES)),
    "failing module": ("fail", "", 5, "partial\n", "broken\n", None),
    "out of fuel": ("spin", "\n  fuel: 100000", 134, "", "bflow: wasm trap: all fuel consumed by WebAssembly\n",
                    None),
}


def wasm_spec(tmp_path: Path, module: str, extra: str = "") -> Path:
    """A one-shard pipeline over in/data.txt whose module lies in mods/, relative to the spec."""
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in" / "data.txt").write_text(LINES)
    (tmp_path / "mods").mkdir(exist_ok=True)
    if (WAT / f"{module}.wat").exists():
        (tmp_path / "mods" / f"{module}.wasm").write_bytes(wasmtime.wat2wasm((WAT / f"{module}.wat").read_text()))
    return write_spec(tmp_path, "pipeline: wasm-scenario\ninput: {url: in, glob: '/data.txt'}\n"
                                f"transform:\n  executor: wasm\n  module: mods/{module}.wasm{extra}\n")


@pytest.mark.parametrize("name", SCENARIOS)
def test_wasm_scenario(name, devstack, tmp_path):
    module, extra, exit_code, stdout, stderr, output = SCENARIOS[name]
    r = bflow("run", wasm_spec(tmp_path, module, extra), "--network", devstack.url, "--json",
              "--reprocess")  # the same job ran on the other transport
    job = r.json()
    assert job["shards"][0]["exit_code"] == exit_code, r.stderr
    assert r.code == (0 if exit_code == 0 else 1)
    assert job["shards"][0]["node"] in {n.id for n in devstack.nodes}
    got = tmp_path / "got"
    assert bflow("get", job["id"], "-o", got).code == 0
    assert (got / "stdout").read_text() == stdout
    assert (got / "stderr").read_text() == stderr
    assert (got / "shards" / "0" / "exit_code").read_text().strip() == str(exit_code)
    if output:
        assert (got / "outputs" / output[0]).read_text() == output[1]


def test_a_missing_module_fails_the_shard_with_a_clear_error(devstack, tmp_path):
    r = bflow("run", wasm_spec(tmp_path, "absent"), "--network", devstack.url, "--json")
    assert r.code == 1
    job = r.json()
    assert job["shards"][0]["state"] == "failed"
    got = tmp_path / "got"
    bflow("get", job["id"], "-o", got)
    assert f"wasm module not found: {tmp_path / 'mods' / 'absent.wasm'}" in (got / "stderr").read_text()
