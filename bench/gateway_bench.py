"""Reading a job output through a node's IPFS gateway, beside reading it from local disk.

A 1-node devstack (memory transport) serves its content store as a gateway, as every node
does. A 100 MB file of random bytes is stored in that store the way a shard's outputs are
(`put_tree` of its outputs folder). Then, in this process, best of a few runs each:
- disk:      the original file read from local disk in 5 MiB pieces (page cache warm)
- ipfsspec:  `AsyncIPFSFileSystem.get_file` from the node's gateway to /dev/null (plain GET,
             streamed in 5 MiB pieces; the gateway reads and verifies every block)
- ipfs://:   bflow's `ipfs://` filesystem with an empty local store: ipfsspec as above, then
             the CID rebuilt from the bytes received and checked (what staging does)
The gateway runs in this process too (the devstack's loop thread), so client and server share
one interpreter. Prints MB/s for each and the ratios against disk.

    python bench/gateway_bench.py [--mb 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("BFLOW_HOME", tempfile.mkdtemp(prefix="bflow-bench-"))

import bacalhau_flow.plan.inputs  # noqa: E402,F401  registers ipfs://
from bacalhau_flow.network.devstack import Devstack  # noqa: E402
from bacalhau_flow.storage.ipfs_fs import IPFSFileSystem  # noqa: E402

PIECE = 5 * 2**20


def read_disk(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(PIECE):
            pass


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import ipfsspec

    work = Path(tempfile.mkdtemp(prefix="bflow-gateway-bench-"))
    outputs = work / "outputs"
    outputs.mkdir()
    big = outputs / "big.bin"
    with open(big, "wb") as f:
        for _ in range(args.mb):
            f.write(os.urandom(2**20))
    size_mb = big.stat().st_size / 1e6

    with Devstack(f"memory://bench-{uuid.uuid4().hex[:8]}", nodes=1, root=work / "nodes") as stack:
        node = stack.nodes[0]
        cid = node.store.put_tree(outputs)
        path = f"{cid}/big.bin"
        remote = ipfsspec.AsyncIPFSFileSystem(gateway_addr=node.gateway)
        ours = IPFSFileSystem(store_root=str(work / "empty-store"), gateways=node.gateway, timeout=600)
        read_disk(big)  # page cache warm, connections open, before anything is timed
        remote.get_file(path, os.devnull)

        disk = best(lambda: read_disk(big), args.runs)
        via_ipfsspec = best(lambda: remote.get_file(path, os.devnull), args.runs)
        target = work / "staged.bin"
        via_ours = best(lambda: (target.unlink(missing_ok=True), ours.get_file(path, str(target))), args.runs)
        assert target.stat().st_size == big.stat().st_size

    print(f"{args.mb} MiB file ({size_mb:.1f} MB), best of {args.runs}; gateway {node.gateway}")
    print(f"  local disk           {size_mb / disk:8.0f} MB/s")
    print(f"  ipfsspec via gateway {size_mb / via_ipfsspec:8.0f} MB/s   ({via_ipfsspec / disk:.1f}x the disk time)")
    print(f"  ipfs:// (verified)   {size_mb / via_ours:8.0f} MB/s   ({via_ours / disk:.1f}x the disk time)")


if __name__ == "__main__":
    main()
