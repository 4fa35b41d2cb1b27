"""How much does computing a UnixFS CID cost over plain sha256?

Writes a 200 MB file to a temporary folder, then hashes it with `unixfs.file_cid` and with
`hashlib.sha256` (read in 256 KiB pieces into one reused buffer, the same way), best of a few
runs each, page cache warm. Prints both speeds and the ratio cid time / sha256 time.

    python bench/cid_bench.py [--mb 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bacalhau_flow.storage.unixfs import CHUNK_SIZE, file_cid  # noqa: E402


def sha256_file(path: Path) -> str:
    """Plain sha256 over a file, read into one reused buffer."""
    h = hashlib.sha256()
    buf = memoryview(bytearray(CHUNK_SIZE))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(buf[:n])
    return h.hexdigest()


def best_of(runs: int, fn, *args) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="file size in MB (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, best kept (default 3)")
    args = parser.parse_args()
    size = args.mb * 1_000_000
    with tempfile.TemporaryDirectory(prefix="cid-bench-") as tmp:
        path = Path(tmp) / "data.bin"
        with open(path, "wb") as f:
            block = os.urandom(1 << 20)
            for offset in range(0, size, len(block)):
                f.write(block[: min(len(block), size - offset)])
        sha256_file(path)  # warm the page cache
        sha_time = best_of(args.runs, sha256_file, path)
        cid_time = best_of(args.runs, file_cid, path)
        print(f"file:     {args.mb} MB, cid {file_cid(path)}")
        print(f"sha256:   {size / sha_time / 1e6:8.1f} MB/s  ({sha_time:.3f} s)")
        print(f"file_cid: {size / cid_time / 1e6:8.1f} MB/s  ({cid_time:.3f} s)")
        print(f"ratio (cid time / sha256 time): {cid_time / sha_time:.3f}")


if __name__ == "__main__":
    main()
