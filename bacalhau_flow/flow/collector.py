"""Python's garbage collector while a job's flow runs: fewer, larger young collections.

A job's flow allocates a great many short-lived containers a shard (Prefect's task engine, its
states and events, the network's envelopes and models): with Python's default first threshold
(700 allocations) a 1000-shard job made ~550 young collections, ~50 middle ones and 4-5 full
ones, the full ones walking every object of the process with the GIL held, ~1.0-1.3 s of a 10-14 s
run (2-core machine, `gc.callbacks`). With JOB_THRESHOLD the same job makes ~5 young collections
and at most one full one, 0.13-0.68 s. Garbage in reference cycles waits a little longer to be
freed: at most JOB_THRESHOLD allocations, a few MB.

The thresholds are the process's, so they are raised only while at least one job flow runs in
it (jobs of a file run side by side in threads), and given back when the last one ends, unless
someone changed them meanwhile. A process whose collector is disabled, or whose first threshold
is already at least JOB_THRESHOLD, is left as it is.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from typing import Iterator

JOB_THRESHOLD = 50_000  # allocations between two young collections while a job flow runs

_lock = threading.Lock()
_running = 0
_saved: tuple[int, int, int] | None = None  # the thresholds before the first job flow, when raised


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the collector's first threshold to JOB_THRESHOLD for the duration (see above)."""
    global _running, _saved
    with _lock:
        _running += 1
        if _running == 1:
            current = gc.get_threshold()
            if gc.isenabled() and current[0] < JOB_THRESHOLD:
                _saved = current
                gc.set_threshold(JOB_THRESHOLD, *current[1:])
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _saved is not None:
                if gc.get_threshold() == (JOB_THRESHOLD, *_saved[1:]):  # not changed by someone else meanwhile
                    gc.set_threshold(*_saved)
                _saved = None
