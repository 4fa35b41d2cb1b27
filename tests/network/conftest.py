"""A 3-node devstack on each transport: memory (in this process) and NATS (a real nats-server)."""

import uuid

import pytest

from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.testing.requires import import_or_skip


@pytest.fixture(scope="session")
def nats_server():
    server_mod = import_or_skip("bacalhau_flow_nats.server", "the NATS plugin (plugins/bacalhau-flow-nats)",
                                "bash scripts/setup.sh installs it")
    server = server_mod.NatsServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "nats"])
def network_url(request):
    if request.param == "memory":
        return f"memory://devstack-{uuid.uuid4().hex[:8]}"
    return request.getfixturevalue("nats_server").url


@pytest.fixture
def devstack(network_url, tmp_path):
    with Devstack(network_url, nodes=3, root=tmp_path / "nodes") as stack:
        yield stack
