"""An idle `bflow node` stays light (issue 13: under 60 MB; `bench/network_bench.py` and the README
give the figure): what it runs on its own imports neither Prefect, docker, wasmtime nor aiohttp
(20 MB, nats-py wants it only for ws://) nor cryptography (key files are read by hand)."""

import subprocess
import sys

from bacalhau_flow.testing.requires import import_or_skip

HEAVY = ("prefect", "docker", "wasmtime", "aiohttp", "cryptography", "yaml")

NODE = """
import asyncio, sys, tempfile
from pathlib import Path
import bacalhau_flow.cli.main, bacalhau_flow.cli.network
import bacalhau_flow_nats.transport
from bacalhau_flow.network.identity import Identity
from bacalhau_flow.network.node import ComputeNode
from bacalhau_flow.storage.gateway import Gateway
from bacalhau_flow.storage.store import ContentStore

home = Path(tempfile.mkdtemp())
identity = Identity.load_or_create(home / "node.key")
assert Identity.load_or_create(home / "node.key").node_id == identity.node_id

async def main():
    gateway = Gateway(ContentStore(home / "store"))
    await gateway.start()
    await gateway.stop()

asyncio.run(main())
print(" ".join(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))) or "none")
"""


def test_an_idle_node_imports_none_of_the_heavy_packages():
    import_or_skip("bacalhau_flow_nats.transport", "the NATS plugin (plugins/bacalhau-flow-nats)",
                   "bash scripts/setup.sh installs it")
    out = subprocess.run([sys.executable, "-c", NODE, *HEAVY], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none", f"an idle node imported: {out.stdout.strip()}"
