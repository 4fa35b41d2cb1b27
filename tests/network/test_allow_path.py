"""Paths a serving node may read: `bflow node` stages local (`file://`, path) inputs only from
its --allow-path folders, none without one; shards see only the variables it passes
(--pass-env). Remote requesters are not hindered: they ship local inputs as ipfs:// content."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import bflow, write_spec

from bacalhau_flow.errors import StagingError
from bacalhau_flow.network.messages import InputRef, ShardRequest, TransformRef
from bacalhau_flow.network.staging import make_writable, stage_inputs
from bacalhau_flow.testing.requires import import_or_skip


def request(url: str, *paths: str, cmd: list[str] | None = None, attempt: int = 0) -> ShardRequest:
    return ShardRequest(job_id="j-allow", pipeline="p", shard_index=0, shard_id="s", shard_count=1, attempt=attempt,
                        transform=TransformRef(cmd=cmd or ["true"]), inputs=[InputRef(name="in", url=url)],
                        datums=[{"in": list(paths or ["/"])}])


@pytest.fixture
def folders(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    for d, text in ((allowed, "fine\n"), (outside, "secret\n")):
        d.mkdir()
        (d / "a.txt").write_text(text)
    (allowed / "leak.txt").symlink_to(outside / "a.txt")
    (allowed / "sub").mkdir()
    (allowed / "sub" / "b.txt").write_text("b\n")
    return allowed, outside


@pytest.fixture
def inputs_dir(tmp_path):
    path = tmp_path / "work" / "inputs"
    yield path
    make_writable(path)


def test_inputs_inside_an_allowed_folder_are_staged(folders, inputs_dir):
    allowed, _ = folders
    assert stage_inputs(request(str(allowed), "/a.txt", "/sub"), inputs_dir, allow_paths=[allowed]) == 7
    assert stage_inputs(request(f"file://{allowed}/sub", "/b.txt"), inputs_dir, allow_paths=[allowed]) == 2


@pytest.mark.parametrize("url", ["{outside}", "file://{outside}", "{allowed}/../outside", "local://{outside}",
                                 "simplecache::file://{outside}"])
def test_inputs_outside_the_allowed_folders_are_refused_naming_the_path_and_the_flag(folders, inputs_dir, url):
    allowed, outside = folders
    with pytest.raises(StagingError) as e:
        stage_inputs(request(url.format(allowed=allowed, outside=outside), "/a.txt"), inputs_dir,
                     allow_paths=[allowed])
    assert f"local path {outside}" in str(e.value) and "--allow-path" in str(e.value)
    assert "--allow-path DIR" in e.value.hint and not e.value.retryable
    assert not (inputs_dir / "in" / "a.txt").exists()


def test_a_file_symlink_in_an_allowed_folder_does_not_lead_out(folders, inputs_dir):
    allowed, outside = folders
    with pytest.raises(StagingError, match=f"local path {outside / 'a.txt'}"):
        stage_inputs(request(str(allowed), "/leak.txt"), inputs_dir, allow_paths=[allowed])
    with pytest.raises(StagingError, match="refused"):  # also inside a directory datum
        stage_inputs(request(str(allowed), "/"), inputs_dir, allow_paths=[allowed])


def test_without_allow_path_no_local_path_is_read(folders, inputs_dir):
    allowed, _ = folders
    with pytest.raises(StagingError, match="started without --allow-path"):
        stage_inputs(request(str(allowed), "/a.txt"), inputs_dir, allow_paths=[])


def test_protocols_that_read_local_files_by_other_names_are_refused(folders, inputs_dir):
    allowed, _ = folders
    with pytest.raises(StagingError, match="does not open reference://"):
        stage_inputs(request(f"reference://{allowed}/refs.json", "/a.txt"), inputs_dir, allow_paths=[allowed])


def test_other_protocols_and_unrestricted_nodes_are_not_affected(folders, inputs_dir):
    import fsspec

    allowed, outside = folders
    with fsspec.filesystem("memory").open("/allow-test/m.txt", "w") as f:
        f.write("memory\n")
    assert stage_inputs(request("memory://allow-test", "/m.txt"), inputs_dir, allow_paths=[]) == 7
    assert stage_inputs(request(str(outside), "/a.txt"), inputs_dir, allow_paths=None) == 7  # Devstack, embedded


# -- `bflow node --allow-path --pass-env`, end to end ---------------------------------------

@pytest.fixture
def nats_url():
    server_mod = import_or_skip("bacalhau_flow_nats.server", "the NATS plugin (plugins/bacalhau-flow-nats)",
                                "bash scripts/setup.sh installs it")
    server = server_mod.NatsServer().start()
    yield server.url
    server.stop()


def start_node(url: str, name: str, *args: str, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "bacalhau_flow.cli", "node", "--network", url, "--name", name,
                             "--cpu", "1", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.node_id = proc.stdout.readline().decode().strip()
    assert proc.node_id.startswith("n-"), proc.stderr.read().decode()
    return proc


async def run_raw(url: str, identity, requests: list[ShardRequest], store_dir: Path):
    """Send each request as it is (a requester without a gateway ships nothing): what a
    requester that names local paths on purpose would send."""
    from bacalhau_flow.network.requester import Requester
    from bacalhau_flow.storage import ContentStore
    from bacalhau_flow.transports import transport_for
    from bacalhau_flow.transports.signing import SignedTransport

    transport = SignedTransport(transport_for(url), identity)
    await transport.connect()
    store = ContentStore(store_dir)
    requester = Requester(transport, store)
    try:
        await requester.start(expect_nodes=1, wait=10)
        return [await requester.run(r) for r in requests], store
    finally:
        await requester.stop()
        await transport.close()


def test_bflow_node_reads_only_allowed_paths_and_passes_only_named_variables(tmp_path, folders, nats_url):
    from bacalhau_flow.network.embedded import client_identity
    from bacalhau_flow.network.identity import Identity

    allowed, outside = folders
    raw = Identity.generate()
    env = {**os.environ, "SECRET_X": "1", "OTHER_SECRET": "2"}
    node = start_node(nats_url, "allow-path", "--allow-path", str(allowed), "--pass-env", "SECRET_X",
                      "--trust", raw.node_id, "--trust", client_identity().node_id, env=env)
    try:
        show = ["sh", "-c", "env; cat $BFLOW_INPUTS/in/a.txt"]
        results, store = asyncio.run(run_raw(nats_url, raw, [
            request(f"file://{allowed}", "/a.txt", cmd=show, attempt=0),
            request(str(outside), "/a.txt", cmd=show, attempt=1),
        ], tmp_path / "store"))
        inside, refused = results
        assert inside.state == "completed", inside.error
        stdout = store.cat(inside.stdout_cid).decode()
        assert "SECRET_X=1\n" in stdout and "OTHER_SECRET" not in stdout and stdout.endswith("fine\n")
        assert refused.state == "failed" and f"local path {outside}" in refused.error
        assert "--allow-path" in refused.error and "secret" not in store.cat(refused.stdout_cid).decode()

        # A requester on the network ships its local inputs: outside --allow-path is no matter.
        spec = write_spec(tmp_path, f"pipeline: shipped\ninput: {{url: {outside}, glob: '/*'}}\n"
                                    "transform: {cmd: [sh, -c, 'cp $BFLOW_INPUTS/outside/* $BFLOW_OUTPUTS/']}\n")
        r = bflow("run", spec, "--network", nats_url, "--json")
        assert r.code == 0, r.stderr
    finally:
        node.terminate()
        node.wait(timeout=30)


def test_bflow_node_refuses_an_allow_path_that_is_no_folder(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bacalhau_flow.cli", "node", "--network", "nats://127.0.0.1:1",
                        "--allow-path", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--allow-path" in r.stderr and "no such folder" in r.stderr
