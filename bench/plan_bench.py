"""Planning speed over a local tree versus a bare `os.walk` of the same tree.

Creates DIRS x FILES small files (default 1000 x 100 = 100,000) in a temporary directory,
then, in this one process, times `os.walk` and `plan_datums` for a few globs (best of
`--repeat` runs each, os.walk timed again beside each glob, after one warm-up walk so both
see a warm page cache) and prints seconds and the ratio plan / os.walk. The aim is a ratio
within 2x. A last line splits the `/**` case into listing, matching and building the `Datum` objects.

    python bench/plan_bench.py [--dirs 1000] [--files 100] [--repeat 7]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bacalhau_flow.plan.datums import match_paths, plan_datums, single_datums  # noqa: E402
from bacalhau_flow.plan.glob import compile_glob  # noqa: E402
from bacalhau_flow.plan.inputs import open_input  # noqa: E402

GLOBS = ["/**", "/*/*.txt", "/*"]


def make_tree(root: str, dirs: int, files: int) -> None:
    for d in range(dirs):
        path = os.path.join(root, f"d{d:04d}")
        os.mkdir(path)
        for f in range(files):
            with open(os.path.join(path, f"f{f:03d}.txt"), "wb") as fh:
                fh.write(b"x")


def bare_walk(root: str) -> int:
    n = 0
    for _dirpath, dirnames, filenames in os.walk(root):
        n += len(dirnames) + len(filenames)
    return n


def best(fn, repeat: int) -> tuple[float, object]:
    """The best time of `repeat` calls, and the last result. The result before is freed before
    the clock starts (freeing 10^5 datums is not planning's cost, nor os.walk's)."""
    times, result = [], None
    for _ in range(repeat):
        result = None
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dirs", type=int, default=1000)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bflow-plan-bench-") as root:
        t0 = time.perf_counter()
        make_tree(root, args.dirs, args.files)
        print(f"created {args.dirs * args.files} files in {args.dirs} dirs "
              f"in {time.perf_counter() - t0:.1f}s under {root}")
        bare_walk(root)  # warm the page cache for both contenders

        walk_s, n = best(lambda: bare_walk(root), args.repeat)
        print(f"os.walk                     {walk_s:8.3f}s  ({n} entries)")
        worst = 0.0
        for glob in GLOBS:
            plan_s, datums = best(lambda: plan_datums("in", open_input(root), glob, []), args.repeat)
            walk_s = min(walk_s, best(lambda: bare_walk(root), args.repeat)[0])  # the machine may have got quieter
            ratio = plan_s / walk_s
            worst = max(worst, ratio)
            print(f"plan_datums {glob!r:<14}  {plan_s:8.3f}s  ({len(datums)} datums)  "
                  f"ratio {ratio:.2f}x")
        print(f"worst ratio plan/os.walk: {worst:.2f}x (aim: within 2x)")

        # where the time goes, for the worst glob: listing, matching, building Datum objects
        glob = "/**"
        list_s, (dirs, files) = best(lambda: open_input(root).list_paths(), args.repeat)
        pattern = compile_glob(glob)
        match_s, hits = best(lambda: match_paths(pattern, dirs, files), args.repeat)
        paths = [p for p, _, _ in hits]
        gc.disable()  # as plan_datums does while it builds them
        try:
            build_s, _ = best(lambda: single_datums("in", paths), args.repeat)
        finally:
            gc.enable()
        print(f"breakdown for {glob!r}: list_paths {list_s:.3f}s ({list_s / walk_s:.2f}x os.walk), "
              f"match+sort {match_s:.3f}s, list+match {(list_s + match_s) / walk_s:.2f}x os.walk; "
              f"building {len(hits)} Datum objects {build_s:.3f}s ({build_s / walk_s:.2f}x os.walk)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
