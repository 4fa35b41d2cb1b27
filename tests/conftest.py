"""Every test session gets its own $BFLOW_HOME, and so its own managed Prefect server
(flow/server.py): started here, before anything imports prefect, shared by the tests and by
every `bflow` process they start (they inherit PREFECT_API_URL), stopped at the end, also
when pytest ends before any session (a usage error: pytest loads this file to learn options)."""

import atexit
import os
import tempfile

import pytest

os.environ["BFLOW_HOME"] = os.environ.get("BFLOW_TEST_HOME") or tempfile.mkdtemp(prefix="bflow-test-")
os.environ.pop("PREFECT_API_URL", None)

from bacalhau_flow.flow.prefect_api import use_prefect  # noqa: E402

use_prefect()
_PYTEST_PID = os.getpid()


def _stop_server_left_running():
    """At exit, in pytest's own process (not in a child forked by a test): a no-op when
    pytest_sessionfinish stopped the server already, since nothing is recorded then."""
    if os.getpid() == _PYTEST_PID:
        from bacalhau_flow.flow.server import stop_server

        stop_server()


atexit.register(_stop_server_left_running)

# Fixtures of real parts that several test folders use: `s3_server` (a moto S3 server).
pytest_plugins = ["bacalhau_flow.testing.s3"]


# Variables that `bflow` commands set for the rest of their process (the NATS security
# options, --advertise): tests run commands in this process, so each test gets them back.
_COMMAND_SET = ("BFLOW_NATS_", "BFLOW_ADVERTISE")


@pytest.fixture(autouse=True)
def _restore_command_environment():
    before = {k: v for k, v in os.environ.items() if k.startswith(_COMMAND_SET)}
    yield
    for key in [k for k in os.environ if k.startswith(_COMMAND_SET)]:
        del os.environ[key]
    os.environ.update(before)


def pytest_sessionfinish(session, exitstatus):
    import sys

    from bacalhau_flow.flow.server import stop_server

    if "prefect" in sys.modules:  # Prefect's queued logs and events reach the server before it stops
        from prefect._internal.concurrency.services import QueueService

        QueueService.drain_all(timeout=10)
    stop_server()
