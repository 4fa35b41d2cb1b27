"""`transform.secrets`: read on the requester, sealed to the accepting node, opened only into
the shard's environment; never in the job store, logs, or on the wire in clear."""

import pytest
from cli_helpers import bflow, write_spec

from bacalhau_flow.home import jobs_db
from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.network.identity import Identity
from bacalhau_flow.network.messages import InputRef, ShardRequest, TransformRef
from bacalhau_flow.network.requester import Requester
from bacalhau_flow.network.secrets import seal
from bacalhau_flow.storage import ContentStore
from bacalhau_flow.testing.hostile import Hostile
from bacalhau_flow.testing.requires import import_or_skip
from bacalhau_flow.transports.memory import MemoryTransport
from bacalhau_flow.transports.signing import SignedTransport

VALUE = "s3cr3t-value-4711"


def secret_spec(tmp_path, source: str = "env:BFLOW_TEST_TOKEN"):
    d = tmp_path / "d"
    d.mkdir(exist_ok=True)
    (d / "a.txt").write_text("a\n")
    return write_spec(tmp_path, "pipeline: secretive\ninput: {url: d, glob: '/*'}\n"
                                f"transform:\n  secrets: {{API_TOKEN: '{source}'}}\n"
                                "  cmd: [sh, -c, 'printf %s \"$API_TOKEN\" | wc -c > $BFLOW_OUTPUTS/len']\n")


def test_a_secret_reaches_the_shard_and_nothing_else(tmp_path, monkeypatch):
    import_or_skip("bacalhau_flow_nats.server", "the NATS plugin (plugins/bacalhau-flow-nats)")
    from bacalhau_flow_nats.server import NatsServer

    monkeypatch.setenv("BFLOW_TEST_TOKEN", VALUE)
    spec = secret_spec(tmp_path)
    server = NatsServer().start()
    try:
        with Devstack(server.url, nodes=2, root=tmp_path / "nodes") as stack:
            sniffer = Hostile(server.url)
            stack.call(sniffer.__aenter__())
            stack.call(sniffer.sniff())
            job = bflow("run", spec, "--network", server.url, "--json").json()
            wire = sniffer.wire_text()
            stack.call(sniffer.__aexit__(None, None, None))
    finally:
        server.stop()
    assert job["state"] == "completed"
    got = tmp_path / "got"
    bflow("get", job["id"], "-o", got)
    assert (got / "outputs" / "len").read_text().strip() == str(len(VALUE))  # the shard had it
    assert "API_TOKEN" in wire and VALUE not in wire  # sealed on the wire
    assert VALUE.encode() not in jobs_db().read_bytes()
    assert VALUE not in bflow("describe", job["id"], "--json").stdout + bflow("logs", job["id"]).stdout


def test_the_embedded_network_hands_secrets_to_the_shard(tmp_path, monkeypatch):
    monkeypatch.setenv("BFLOW_TEST_TOKEN", VALUE)
    job = bflow("run", secret_spec(tmp_path), "--json").json()
    assert job["state"] == "completed"
    got = tmp_path / "got"
    bflow("get", job["id"], "-o", got)
    assert (got / "outputs" / "len").read_text().strip() == str(len(VALUE))


@pytest.mark.parametrize("source, says", [("env:BFLOW_TEST_UNSET_VAR", "BFLOW_TEST_UNSET_VAR is not set"),
                                          ("file:missing-secret.txt", "cannot read")])
def test_a_secret_that_cannot_be_read_stops_the_run_before_any_job(tmp_path, monkeypatch, source, says):
    monkeypatch.delenv("BFLOW_TEST_UNSET_VAR", raising=False)
    before = bflow("list", "--json").json()
    done = bflow("run", secret_spec(tmp_path, source))
    assert done.code != 0
    assert "secret API_TOKEN: " in done.stderr and says in done.stderr
    assert "Traceback" not in done.stderr
    assert bflow("list", "--json").json() == before  # no job recorded


def test_a_secret_sealed_to_another_key_fails_the_attempt_and_runs_nothing(tmp_path):
    seed = tmp_path / "seed"
    seed.write_text("x\n")
    marker = tmp_path / "ran"
    request = ShardRequest(job_id="j-sealed", pipeline="p", shard_index=0, shard_id="s", shard_count=1,
                           inputs=[InputRef(name="seed", url=str(seed))], datums=[{"seed": ["/seed"]}],
                           transform=TransformRef(cmd=["sh", "-c", f"touch {marker}"]))
    url = f"memory://sealed-{tmp_path.name}"
    with Devstack(url, nodes=1, root=tmp_path / "nodes") as stack:
        async def run():
            transport = SignedTransport(MemoryTransport(url), Identity.generate())
            requester = Requester(transport, ContentStore(tmp_path / "store"))
            await requester.start(expect_nodes=1)
            # seal to a key that is not the node's, as if the accept had been meant for another
            requester._with_secrets = lambda body, node, secrets: dict(
                body, secrets=seal(secrets, Identity.generate().public_key_b64))
            try:
                return await requester.run(request, secrets={"API_TOKEN": VALUE})
            finally:
                await requester.stop()

        result = stack.call(run())
    assert result.state == "failed" and "cannot be opened" in result.error
    assert not marker.exists()
