"""The live display of `bflow run` and `bflow rerun`, on stderr.

On a terminal it is a rich Live view: a line for what the run waits on before its first shard
("planning", "starting Prefect server", "loading Prefect"), then a row per pipeline of the
file, there from the start: a downstream whose upstream has not finished reads "waiting for
split". A row counts its shards done, running, queued, failed and reused, with a rate and an
ETA. Without a terminal (CI logs, a pipe) it is plain lines: a phase that lasts, a pipeline
that starts, its counts every `every` seconds while they change, and its end.

The rows are fed by the progress hooks of flow/runner.py (`run_dag(progress_for=...)`: one
`(index, state)` call per shard change). Between a row's start and its first shard, the job
store says how far the job got (recorded, queued while its network opens, running): that is
read here, every POLL seconds, so the runner needs no hook for it.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

POLL = 0.3  # seconds between looks at the job store (a row's status before its first shard)
LINGER = 2.0  # plain lines: a phase is printed once it has lasted this long
# What a job's recorded state means for a row that has no shard event yet.
BEFORE_FIRST_SHARD = {None: "preparing the job", "queued": "waiting for nodes", "running": "dispatching shards"}
# Which count a shard state adds to; every other state (running, retrying) counts as running.
BUCKET = {"completed": "completed", "skipped": "reused", "failed": "failed", "cancelled": "cancelled"}


class PipelineRow:
    """One pipeline's shards as the display counts them: each index's latest state."""

    def __init__(self, name: str, after: list[str], job_id: str | None = None):
        self.name, self.after, self.job_id = name, after, job_id
        self.total: int | None = None
        self.states: dict[int, str] = {}
        self.counts = {"completed": 0, "running": 0, "failed": 0, "reused": 0, "cancelled": 0}
        self.began: float | None = None  # the runner took it up (planned, job being made)
        self.first_shard: float | None = None  # the first shard was dispatched
        self.ended: float | None = None
        self.outcome: str | None = None  # set when it ends: finished, failed, cancelled, not run
        self.status: str | None = None  # before its first shard: what it waits on
        self.status_since = 0.0  # when it began to wait on that

    def update(self, index: int, state: str) -> None:
        old = self.states.get(index)
        if old is not None:
            self.counts[_bucket(old)] -= 1
        self.states[index] = state
        self.counts[_bucket(state)] += 1
        if self.first_shard is None and state in ("running", "retrying"):
            self.first_shard = time.monotonic()

    @property
    def shard_total(self) -> int:
        return self.total if self.total is not None else len(self.states)

    def numbers(self) -> dict[str, int]:
        c = self.counts
        queued = self.shard_total - sum(c.values())
        return {"done": c["completed"], "running": c["running"], "queued": max(queued, 0),
                "failed": c["failed"], "reused": c["reused"], "cancelled": c["cancelled"]}

    def rate(self, now: float) -> float | None:
        """Shards finished (done or failed, not reused) per second since the first was dispatched."""
        finished = self.counts["completed"] + self.counts["failed"]
        if self.first_shard is None or not finished:
            return None
        return finished / max((self.ended or now) - self.first_shard, 1e-3)

    def eta(self, now: float) -> float | None:
        rate = self.rate(now)
        if rate is None:
            return None
        n = self.numbers()
        return (n["queued"] + n["running"]) / rate

    def elapsed(self, now: float) -> float:
        return (self.ended or now) - self.began if self.began is not None else 0.0

    def waiting_text(self, rows: dict[str, "PipelineRow"]) -> str:
        """What a row without shard events shows."""
        if self.outcome is not None:
            return self.outcome
        if self.began is None:
            pending = [u for u in self.after if u in rows and rows[u].ended is None]
            if pending:
                return f"waiting for {' and '.join(pending)}"
            return "planning" if self.total is None else f"planned, {self.total} shard{'' if self.total == 1 else 's'}"
        return self.status or "preparing the job"

    def plain_counts(self, now: float, final: bool = False) -> str:
        n = self.numbers()
        line = f"{n['done'] + n['reused']}/{self.shard_total} done, "
        if not final:
            line += f"{n['running']} running, {n['queued']} queued, "
        line += f"{n['failed']} failed, {n['reused']} reused"
        line += f", {n['cancelled']} cancelled" if n["cancelled"] else ""
        if (rate := self.rate(now)) is not None:
            line += f", {rate:.1f} shards/s"
        if self.ended is None and (eta := self.eta(now)) is not None:
            line += f", ETA {_duration(eta)}"
        return line


def _bucket(state: str) -> str:
    return BUCKET.get(state, "running")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class RunDisplay:
    """The display of one `bflow run` (or `rerun`): use as a context manager; `waiting(text)`
    for each phase before the first shard, `job(name, shards)` as run_dag's `progress_for`,
    `note(line)` for a line printed above it (the Prefect server's start)."""

    def __init__(self, pipelines: dict[str, list[str]] | None = None, *, job_ids: dict[str, str] | None = None,
                 console: Console | None = None, live: bool | None = None, every: float = 10.0):
        from . import render

        self.console = console or render.err
        self.live = (self.console.is_terminal and not self.console.is_dumb_terminal) if live is None else live
        self.every = every
        ids = job_ids or {}
        self.rows = {name: PipelineRow(name, after, ids.get(name)) for name, after in (pipelines or {}).items()}
        self._lock = threading.RLock()
        self._waiting: tuple[str, float] | None = None
        self._printed_waiting: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
        self._warnings = None
        self._plain_state: dict[str, tuple] = {}  # row -> (when its counts or status were printed, which)

    # -- what the run calls ------------------------------------------------------------
    def waiting(self, text: str | None) -> None:
        """The line for what the run waits on now (None: nothing, the rows say it)."""
        with self._lock:
            self._waiting = (text, time.monotonic()) if text else None

    def note(self, line: str) -> None:
        """A line of its own, above the display (on a terminal) or as it is."""
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    @contextmanager
    def job(self, name: str, total: int | None) -> Iterator[Callable[[int, str], None]]:
        """A row's lifetime in the runner: yields its progress hook `(shard index, state)`.
        Several rows may run at once (pipelines of a DAG, in threads)."""
        with self._lock:
            row = self.rows.get(name) or self.rows.setdefault(name, PipelineRow(name, []))
            row.total, row.began, row.status, row.status_since = total, time.monotonic(), None, time.monotonic()
            self._waiting = None  # from here on, the row says what it waits on
        if not self.live:
            self._plain(f"{name}: {'' if total is None else f'{total} '}shard{'' if total == 1 else 's'}")
        done = False

        def hook(index: int, state: str) -> None:
            if done:
                return
            with self._lock:
                row.update(index, state)

        outcome = "failed"
        try:
            yield hook
            # the job's own state is in the summary after the run; this is what its shards did
            outcome = "failed" if row.counts["failed"] else "cancelled" if row.counts["cancelled"] else "finished"
        except BaseException as e:
            from ..errors import JobCancelled

            if isinstance(e, (KeyboardInterrupt, JobCancelled)):
                outcome = "cancelled"
            raise
        finally:
            done = True
            with self._lock:
                row.ended, row.outcome = time.monotonic(), outcome
            if not self.live:
                self._plain(f"{name}: {outcome}, {row.plain_counts(time.monotonic(), final=True)} "
                            f"in {_duration(row.elapsed(time.monotonic()))}")

    def planned(self, plans) -> None:
        """The shard counts of the pipelines planned before anything runs (flow/dag.py plans)."""
        with self._lock:
            for plan in plans:
                if plan.pipeline in self.rows and not plan.after:
                    self.rows[plan.pipeline].total = len(plan.shards)

    def finish(self, records) -> None:
        """The rows of jobs that ended without running (`not run: upstream ... failed`) say so."""
        with self._lock:
            for record in records:
                row = self.rows.get(record.pipeline)
                if row is not None and row.began is None:
                    row.outcome = "not run" if record.state == "cancelled" else record.state

    # -- the terminal ------------------------------------------------------------------
    def __enter__(self) -> "RunDisplay":
        # Prefect's deprecation and settings warnings are for its developers, not in a run's display.
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", module=r"prefect(\.|$)")
        if self.live:  # other writers' lines (a library's notice) print above the rows, never into them;
            # stdout only when it is this terminal too: piped, it is the run's data
            self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=4,
                              transient=False, redirect_stdout=sys.stdout.isatty(), redirect_stderr=True)
            self._live.__enter__()
        self._thread = threading.Thread(target=self._tick, name="bflow-display", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            self._waiting = None
        try:
            if self._live is not None:
                # nothing ran (a bad input, Ctrl-C while planning): leave no frozen rows behind
                self._live.transient = not any(r.began is not None for r in self.rows.values())
                self._live.__exit__(*exc)
        finally:
            if self._warnings is not None:
                self._warnings.__exit__(*exc)

    def _render(self):
        now = time.monotonic()
        with self._lock:
            parts = []
            if self._waiting is not None:
                parts.append(Spinner("dots", text=f"{self._waiting[0]} …", style="cyan"))
            table = Table.grid(padding=(0, 1))
            for column in range(7):
                table.add_column(no_wrap=True, overflow="ellipsis", justify="right" if column in (2, 4, 5, 6) else "left")
            for row in self.rows.values():
                table.add_row(*self._row(row, now))
            if self.rows:
                parts.append(table)
        return Group(*parts)

    def _cells(self, row: PipelineRow, now: float) -> list:
        """name, bar, finished/total, counts (or what it waits on), rate, ETA, time taken."""
        name = f"[bold]{escape(row.name)}[/]"
        if row.began is None and not row.states:
            text = row.waiting_text(self.rows)
            style = {"failed": "red", "not run": "yellow", "cancelled": "yellow"}.get(text, "dim")
            return [name, "", "", f"[{style}]{escape(text)}[/]", "", "", ""]
        n, total = row.numbers(), row.shard_total
        finished = n["done"] + n["reused"] + n["failed"] + n["cancelled"]
        colour = "red" if n["failed"] else "green"
        bar = ProgressBar(total=max(total, 1), completed=finished if total else 1,
                          width=12 if self.console.width < 100 else 24, complete_style=colour, finished_style=colour)
        if row.first_shard is None and not finished:  # what it waits on, or how it ended before any shard
            text = row.waiting_text(self.rows)
            counts = f"[{'red' if text == 'failed' else 'dim'}]{escape(text)}[/]"
        else:  # failed and reused only when there are some: the row fits 80 columns
            counts = f"[green]{n['done']} done[/] · [cyan]{n['running']} running[/] · [dim]{n['queued']} queued[/]"
            counts += f" · [red]{n['failed']} failed[/]" if n["failed"] else ""
            counts += f" · [blue]{n['reused']} reused[/]" if n["reused"] else ""
            counts += f" · [yellow]{n['cancelled']} cancelled[/]" if n["cancelled"] else ""
        rate, eta = row.rate(now), row.eta(now)
        return [name, bar, f"{finished}/{total}", counts, f"{rate:.1f}/s" if rate is not None else "",
                f"ETA {_duration(eta)}" if eta is not None and row.ended is None else "",
                f"[yellow]{_duration(row.elapsed(now))}[/]"]

    def _row(self, row: PipelineRow, now: float) -> list:
        """`_cells` as Text: a frame drawn during a `print(markup=False)` (a note) keeps its styles."""
        return [Text.from_markup(cell) if isinstance(cell, str) else cell for cell in self._cells(row, now)]

    # -- the job store and plain lines ------------------------------------------------
    def _tick(self) -> None:
        store = None
        try:
            while not self._stop.wait(POLL):
                store = self._poll(store)
                if not self.live:
                    self._plain_tick()
        finally:
            if store is not None:
                store.close()

    def _poll(self, store):
        """Each row that began and has no shard event yet: what its job's recorded state says."""
        with self._lock:
            rows = [r for r in self.rows.values() if r.job_id and r.began is not None and r.ended is None
                    and r.first_shard is None and not r.states]
        if not rows:
            return store
        from ..errors import BflowError

        try:
            if store is None:
                from ..home import jobs_db
                from ..jobs.store import JobStore

                store = JobStore(jobs_db())
            for row in rows:
                try:
                    state = store.get(row.job_id, with_shards=False).state
                except BflowError:
                    state = None
                with self._lock:
                    status = BEFORE_FIRST_SHARD.get(state, row.status)
                    if status != row.status:
                        row.status, row.status_since = status, time.monotonic()
        except Exception:  # noqa: BLE001 - a display never stops a run; the row keeps its last status
            pass
        return store

    def _plain_tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._waiting and now - self._waiting[1] >= LINGER and self._printed_waiting != self._waiting[0]:
                self._printed_waiting = self._waiting[0]
                lines = [f"{self._waiting[0]} ..."]
            else:
                lines = []
            for row in self.rows.values():
                if row.began is None or row.ended is not None:
                    continue
                if not row.states:
                    text = row.waiting_text(self.rows)
                    if now - row.status_since >= LINGER and self._plain_state.get(row.name, (0, None))[1] != text:
                        self._plain_state[row.name] = (now, text)
                        lines.append(f"{row.name}: {text}")
                    continue
                when, last = self._plain_state.get(row.name, (row.began, None))
                if now - when >= self.every and row.numbers() != last:  # the counts changed, not only the rate
                    self._plain_state[row.name] = (now, row.numbers())
                    lines.append(f"{row.name}: {row.plain_counts(now)}")
        for line in lines:
            self._plain(line)

    def _plain(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)


def prepare_prefect(display: RunDisplay) -> None:
    """Point this process at Prefect and import it before the first pipeline runs, each step
    on the display's waiting line: a server that has to start comes up while Prefect is
    imported (flow/prefect_api.py). The runner's own calls then find it ready.
    Raises ServerError when no Prefect answers."""
    from ..flow.prefect_api import prefect_ready, use_prefect

    display.waiting("connecting to Prefect")
    started = []  # a line when a server is started (or replaced)

    def echo(line: str) -> None:
        display.note(line)
        started.append(line)

    use_prefect(echo=echo, wait=False)
    display.waiting("loading Prefect while its server starts" if started else "loading Prefect")
    from ..flow import compile  # noqa: F401 - the heavy import, here rather than unannounced in the runner

    display.waiting("starting Prefect server" if started else "waiting for the Prefect server")
    prefect_ready()
    display.waiting(None)
