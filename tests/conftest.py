"""Every test session gets its own $BFLOW_HOME (and so its own Prefect database)."""

import os
import tempfile

# Before anything imports prefect: all state of this test session under one temp folder.
os.environ["BFLOW_HOME"] = os.environ.get("BFLOW_TEST_HOME") or tempfile.mkdtemp(prefix="bflow-test-")
os.environ.pop("PREFECT_API_URL", None)

from bacalhau_flow.home import configure_prefect  # noqa: E402

configure_prefect()

# Fixtures of real parts that several test folders use: `s3_server` (a moto S3 server).
pytest_plugins = ["bacalhau_flow.testing.s3"]
