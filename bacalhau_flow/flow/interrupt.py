"""Ctrl-C for a process that drives jobs: stop them, and leave within a bound.

Measured before this module (issue 12): a SIGINT that Python turns into a KeyboardInterrupt
lands wherever the main thread is, often inside Prefect's engine, and the way out went
through every `finally` of the run (state updates to the API, artifacts, the network's close,
Python's exit joining the threads that still waited on a shard's command). Usually 0.6-2 s for
one pipeline, 2-8 s for a file of two, and up to the length of a shard's command when a
command outlived its cancel (a node's pool thread joined at exit) or the Prefect server was
gone (an ephemeral one the same Ctrl-C killed: client retries for ~75 s, then a traceback).

So, while `watching()` (every `bflow run`, `rerun`, `resume`, and the jobs `bflow serve` runs):

- the first Ctrl-C raises nothing: it sets `requested()`, stops every job whose flow runs in
  this process as Cancel in the UI does (flow/compile.py `stop_all`: no more dispatches, the
  running shards' commands killed on their nodes, the job and its unfinished shards
  `cancelled`), and each job's flow ends Cancelled on its own; a job not yet dispatching sees
  `requested()` and does not start. With nothing dispatching yet it is the KeyboardInterrupt
  it always was (nothing half-done to stop).
- in the `bflow` command (`leave_hard()`, set by the CLI; never in a user's own Python
  program), if the process has not ended GRACE_SECONDS after that first Ctrl-C, or at a second
  Ctrl-C, it leaves at once (`leave_now`): its commands on this machine's embedded nodes are
  killed, every job it owns that did not end is recorded cancelled (one SQL transaction), its
  flow runs are set Cancelled in Prefect (best effort, a fraction of a second), one line is
  printed and the process exits 130 (`os._exit`: no interpreter shutdown to wait on).

A handler that was there before (`bflow serve`'s) is put back afterwards and told about the
Ctrl-C then, so serve stops after the job as it did before.

Python runs a signal's handler in the main thread, once that thread runs again; the kernel may
hand a process's SIGINT to any of its threads, and then a wait of the main thread without a
timeout is not woken by it (found as a file of two pipelines that went on for 30 s after its
Ctrl-C, once in a full suite; one pipeline, whose event loop runs in the main thread, waited
as long). So the main thread waits for its jobs through `next_item` and `result_of`, in steps
of SIGNAL_POLL_SECONDS, and its event loop is woken by any signal (`wakes_on_signals`).
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `bflow` imports this module first, and asyncio costs ~30 ms
    import concurrent.futures
    import socket

GRACE_SECONDS = 2.5  # first Ctrl-C -> at most this long to end cleanly (the bound users see is 3 s)
LEAVE_BOUND_SECONDS = 2.0  # what leave_now may take at most, to say why and leave the job store right
EXIT_STATUS = 130
SIGNAL_POLL_SECONDS = 0.2  # the longest a Ctrl-C taken by another thread waits for its handler

_lock = threading.RLock()
_depth = 0  # nested watching() (a DAG's pipelines inside run_dag)
_previous = None  # the SIGINT handler before the outermost watching()
_count = 0  # Ctrl-Cs since the outermost watching() began
_first_at: float | None = None
_hard = False  # leave_hard(): the bflow command, not a library caller
_leaving = threading.Event()
_stopped: list[str] = []  # the jobs the first Ctrl-C stopped
_parents: set[str] = set()  # flow runs holding the jobs' flow runs (flow/chain.py), while they run


def flow_run_began(flow_run_id: str) -> None:
    """A flow run that holds jobs' flow runs began: `leave_now` sets it Cancelled too."""
    _parents.add(flow_run_id)


def flow_run_ended(flow_run_id: str) -> None:
    _parents.discard(flow_run_id)


def leave_hard() -> None:
    """Let a stuck Ctrl-C (and a second one) end the process at once: for the `bflow` command."""
    global _hard
    _hard = True


def requested() -> bool:
    """Whether Ctrl-C was pressed since the outermost `watching()` began."""
    return _count > 0


@contextmanager
def watching() -> Iterator[None]:
    """Handle Ctrl-C as the module docstring says while inside (in the main thread; elsewhere,
    and nested, this changes nothing)."""
    global _depth, _previous, _count, _first_at
    installed = False
    if threading.current_thread() is threading.main_thread():
        with _lock:
            if _depth == 0:
                try:
                    _previous = signal.signal(signal.SIGINT, _on_sigint)
                    installed = True
                    _count, _first_at = 0, None
                except ValueError:  # not the main interpreter
                    pass
            if installed or _depth:
                _depth += 1
    try:
        yield
    finally:
        if installed or (threading.current_thread() is threading.main_thread() and _depth):
            with _lock:
                _depth -= 1
                if _depth == 0:
                    previous, interrupted = _previous, _count > 0
                    theirs = callable(previous) and previous is not signal.default_int_handler
                    if interrupted and _hard and not theirs:
                        # the command is on its way out (Python's exit may still wait for a node's
                        # thread): another Ctrl-C ends it at once, not with a traceback
                        signal.signal(signal.SIGINT, lambda signum, frame: leave_now("a second Ctrl-C"))
                    else:
                        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
                        _count, _first_at, _previous = 0, None, None
                        _stopped.clear()
                    if interrupted and theirs:
                        previous(signal.SIGINT, None)  # `bflow serve`: it stops after this job, as before


def next_item(items: queue.Queue):
    """`items.get()`, waiting in steps so a Ctrl-C's handler runs within one (the docstring)."""
    while True:
        try:
            return items.get(timeout=SIGNAL_POLL_SECONDS)
        except queue.Empty:
            continue


def result_of(future: concurrent.futures.Future):
    """`future.result()`, waiting in steps so a Ctrl-C's handler runs within one (the docstring)."""
    import concurrent.futures

    while not future.done():
        concurrent.futures.wait([future], timeout=SIGNAL_POLL_SECONDS)
    return future.result()


async def wakes_on_signals(awaitable: Awaitable):
    """Await `awaitable`; meanwhile, in the main thread, a signal that any thread takes wakes
    this event loop (Python's wakeup fd, as asyncio's own signal handlers use), so its handler
    runs at once rather than at the loop's next event (the docstring)."""
    import asyncio
    import socket

    if threading.current_thread() is not threading.main_thread():
        return await awaitable
    loop = asyncio.get_running_loop()
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    loop.add_reader(reader.fileno(), _drain, reader)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        try:
            return await awaitable
        finally:
            signal.set_wakeup_fd(previous)
    finally:
        loop.remove_reader(reader.fileno())
        reader.close()
        writer.close()


def _drain(reader: socket.socket) -> None:
    try:
        while reader.recv(4096):
            pass
    except BlockingIOError:  # drained (recv retries an EINTR itself: PEP 475)
        pass


def _on_sigint(signum, frame) -> None:
    global _count, _first_at
    _count += 1
    if _count > 1:
        if _hard:
            leave_now("a second Ctrl-C")
        raise KeyboardInterrupt
    _first_at = time.monotonic()
    if _hard:
        threading.Thread(target=_leave_if_still_here, name="bflow-ctrl-c", daemon=True).start()
    from .compile import stop_all

    _stopped[:] = stop_all("cancelled by the user")
    if not _stopped:
        raise KeyboardInterrupt  # nothing dispatching yet: the ordinary way out


def _leave_if_still_here() -> None:
    time.sleep(GRACE_SECONDS)
    leave_now(f"its flows did not end within {GRACE_SECONDS:g} s")


def leave_now(why: str) -> None:
    """End the process at once with status 130, leaving the job store right: see the module
    docstring. Never returns. Safe from any thread; only the first caller does the work."""
    if _leaving.is_set():
        time.sleep(5)  # another thread is leaving; it ends the process
        os._exit(EXIT_STATUS)
    _leaving.set()
    # whatever below blocks (a locked job store, a gone API), the process ends within seconds
    threading.Thread(target=lambda: (time.sleep(LEAVE_BOUND_SECONDS), os._exit(EXIT_STATUS)),
                     name="bflow-leaving", daemon=True).start()
    ids: list[str] = list(_stopped)
    flow_runs: list[str] = []
    try:
        from ..home import jobs_db
        from ..jobs.owner import Owner, cancel_jobs_of
        from ..network.node import kill_local_work
        from .compile import flow_runs_in_flight

        kill_local_work()  # the embedded nodes' commands: they would outlive this process
        flow_runs = flow_runs_in_flight() + sorted(_parents)
        ids += [i for i in cancel_jobs_of(jobs_db(), Owner.me(), "cancelled by the user", timeout=0.5)
                if i not in ids]
    except BaseException:  # noqa: BLE001 - leaving: a failure here must not keep the process
        pass
    try:
        _say(why, ids)
        _cancel_flow_runs(flow_runs, why)
    finally:
        os._exit(EXIT_STATUS)


def _cancel_flow_runs(flow_run_ids: list[str], why: str, budget: float = 0.25) -> None:
    """Set the flow runs of the stopped jobs Cancelled, so the Prefect UI does not show them
    running forever: one request each, all at once, for at most `budget` s in all; when the API
    does not answer in time they stay as they are (the job store has the truth)."""
    url = os.environ.get("PREFECT_API_URL")
    if not url or not flow_run_ids or "httpx" not in sys.modules:
        return
    import httpx

    def cancel(flow_run_id: str) -> None:
        try:
            httpx.post(f"{url.rstrip('/')}/flow_runs/{flow_run_id}/set_state", timeout=budget,
                       json={"state": {"type": "CANCELLED", "name": "Cancelled", "message": f"cancelled by the user ({why})"},
                             "force": True})
        except httpx.HTTPError:
            pass

    threads = [threading.Thread(target=cancel, args=(i,), daemon=True) for i in flow_run_ids]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + budget
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _say(why: str, ids: list[str]) -> None:
    """One line on stderr, as a stop that ended by itself prints (flow/runner.py), `why` it
    ended at once in brackets (the live display's cursor shown again first, on a terminal)."""
    try:
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[2K\x1b[?25h")
        if len(ids) == 1:
            line = f"job {ids[0]} cancelled by the user; `bflow describe {ids[0][:10]}` shows what ran"
        elif ids:
            line = f"cancelled by the user: jobs {', '.join(i[:10] for i in ids)}; `bflow list` shows the jobs"
        else:
            line = "cancelled by the user"
        sys.stderr.write(f"error: {line} (ended at once: {why})\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
