"""Every test session gets its own $BFLOW_HOME, and so its own managed Prefect server
(flow/server.py): started here, before anything imports prefect, shared by the tests and by
every `bflow` process they start (they inherit PREFECT_API_URL), stopped at the end."""

import os
import tempfile

os.environ["BFLOW_HOME"] = os.environ.get("BFLOW_TEST_HOME") or tempfile.mkdtemp(prefix="bflow-test-")
os.environ.pop("PREFECT_API_URL", None)

from bacalhau_flow.flow.prefect_api import use_prefect  # noqa: E402

use_prefect()

# Fixtures of real parts that several test folders use: `s3_server` (a moto S3 server).
pytest_plugins = ["bacalhau_flow.testing.s3"]


def pytest_sessionfinish(session, exitstatus):
    import sys

    from bacalhau_flow.flow.server import stop_server

    if "prefect" in sys.modules:  # Prefect's queued logs and events reach the server before it stops
        from prefect._internal.concurrency.services import QueueService

        QueueService.drain_all(timeout=10)
    stop_server()
