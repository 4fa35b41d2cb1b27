"""The task-run log records of the shard tasks (bflow's one record per attempt, flow/window.py,
and Prefect's own, such as "Finished in state Completed()"), sent to the Prefect API in
batches from the loop that runs those tasks (flow/task_runner.py), with their shared client.

Why not Prefect's APILogHandler: on that loop, the serial path of a job, its two records a
shard were ~15% of the loop's time (py-spy --gil, 1000 shards). The handler builds a pydantic
`LogCreate` and measures its JSON on the thread that logs, and its APILogWorker hands each
record from that thread to its queue thread and on to Prefect's global loop before batching:
three threads woken a record, all wanting the GIL. Here a record is a dict appended to a list
on the loop, and one POST /logs/ a batch interval sends the batch. What is still queued when
the runner closes goes to Prefect's own log worker (`close`), which the process's exit drains.

How: a filter on the `prefect.task_runs` logger (`install`) hands each record logged in a
shard task's context (CURRENT_SHARD_LOGS, set by the task runner) to that runner's ShardLogs,
which marks it `send_to_api=False` so that Prefect's handler skips it. Everything else stays
as Prefect does it:

- the record goes on to every handler as before: the console, and the user's own;
- it is sent only where Prefect's handler would have sent it: an APILogHandler on its way up
  at or below its level, `logging.to_api.enabled`, a flow run id; formatted by that handler;
- a record that opted out (`send_to_api=False`) stays out;
- the batch interval and size are Prefect's settings (PREFECT_LOGGING_TO_API_BATCH_INTERVAL,
  ..._BATCH_SIZE), and a message past ..._MAX_LOG_SIZE is cut as Prefect cuts it.

A batch that cannot be sent is reported once on the `bacalhau_flow` logger, never raised: the
job store has every shard's record (`bflow logs`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from datetime import datetime, timezone

log = logging.getLogger("bacalhau_flow")

TASK_RUNS = "prefect.task_runs"  # the logger of Prefect's task-run records (get_run_logger in a task)
RECORD_OVERHEAD = 250  # bytes of a record's JSON beside its message (ids, name, timestamp)
TRUNCATED = "... [truncated]"


class ShardLogs:
    """The task-run records of one task runner's shard tasks, queued on its loop. Made, and
    closed, on that loop."""

    def __init__(self, client):
        from prefect.context import get_settings_context

        settings = get_settings_context().settings.logging.to_api
        self._client = client  # prefect's async client, open until `close`
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._interval = settings.batch_interval
        self._batch_size = settings.batch_size
        self._max_size = settings.max_log_size
        self._batch: list[dict] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task] = set()
        self._handlers: dict[tuple[str, int], logging.Handler | None] = {}  # (logger, level) -> its API handler
        self._warned = False
        self._closed = False  # then a record is left to Prefect's handler

    def take(self, record: logging.LogRecord) -> None:
        """Queue `record` for the API, and mark it so that Prefect's handler skips it, when
        Prefect's handler would send it; otherwise leave it as it is."""
        from prefect.context import get_settings_context

        flow_run_id = getattr(record, "flow_run_id", None)
        if self._closed or not flow_run_id or not getattr(record, "send_to_api", True):
            return
        handler = self._api_handler(record.name, record.levelno)
        if handler is None or not get_settings_context().settings.logging.to_api.enabled:
            return
        task_run_id = getattr(record, "task_run_id", None)
        entry = {
            "name": record.name,
            "level": record.levelno,
            "message": self._bounded(handler.format(record)),
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "flow_run_id": str(flow_run_id),
            "task_run_id": str(task_run_id) if task_run_id else None,
        }
        record.send_to_api = False
        if threading.get_ident() == self._thread:
            self._add(entry)
        else:  # logged from a thread the task started, in its context
            self._loop.call_soon_threadsafe(self._add, entry)

    def close(self) -> None:
        """Hand what is still queued to Prefect's own log worker; later records are left to
        Prefect's handler. The batches in flight go on (`sent`).

        The worker sends those last records in the background, as it sends any task's records
        (Prefect's flow runs do not wait for theirs either), and at the latest when the process
        exits: its exit drains the worker. Sending them here held the end of every job: ~0.3 s
        for the last batch of 100 shards, on a server still digesting the job's events."""
        from prefect.logging.handlers import emit_api_log

        self._closed = True
        for entry in self._take():
            emit_api_log(entry)

    async def sent(self, timeout: float) -> None:
        """Return once the batches in flight on the shared client are sent, at most `timeout` s."""
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout)

    # -- inside -----------------------------------------------------------------
    def _api_handler(self, name: str, level: int) -> logging.Handler | None:
        """The APILogHandler that would send a record of `level` on logger `name`, if any."""
        from prefect.logging.handlers import APILogHandler, WorkerAPILogHandler

        key = (name, level)
        if key not in self._handlers:
            found, current = None, logging.getLogger(name)
            while current is not None and found is None:
                found = next((h for h in current.handlers if isinstance(h, APILogHandler)
                              and not isinstance(h, WorkerAPILogHandler) and level >= h.level), None)
                current = current.parent if current.propagate else None
            self._handlers[key] = found
        return self._handlers[key]

    def _bounded(self, text: str) -> str:
        room = self._max_size - RECORD_OVERHEAD
        data = text.encode()
        if len(data) <= room:
            return text
        return data[:max(room - len(TRUNCATED), 0)].decode("utf-8", errors="ignore") + TRUNCATED

    def _add(self, entry: dict) -> None:
        self._batch.append(entry)
        self._size += len(entry["message"].encode()) + RECORD_OVERHEAD
        if self._size >= self._batch_size:
            self._send()
        elif self._timer is None:
            self._timer = self._loop.call_later(self._interval, self._send)

    def _take(self) -> list[dict]:
        """The queued records, leaving the queue empty and no send due."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._batch, self._size = self._batch, [], 0
        return batch

    def _send(self) -> None:
        batch = self._take()
        if batch:
            task = self._loop.create_task(self._post(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _post(self, batch: list[dict]) -> None:
        try:
            await self._client.create_logs(batch)
        except Exception as e:  # noqa: BLE001 - a gone or failing API: the job store has the records
            if not self._warned:
                self._warned = True
                log.warning("bflow could not send %d task-run log records to the Prefect API: %s", len(batch), e)


# the ShardLogs of the task runner whose shard task logs (set in each task run's context)
CURRENT_SHARD_LOGS: contextvars.ContextVar[ShardLogs] = contextvars.ContextVar("bflow_shard_logs")


class _ToShardLogs(logging.Filter):
    """Hands each record of a shard task's context to its ShardLogs; lets every record pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        shard_logs = CURRENT_SHARD_LOGS.get(None)
        if shard_logs is not None:
            try:
                shard_logs.take(record)
            except Exception:  # noqa: BLE001 - then Prefect's handler sends it, as without bflow
                pass
        return True


_FILTER = _ToShardLogs()


def install() -> None:
    """Put the filter on Prefect's task-run logger (once; logging a record elsewhere than in a
    shard task's context costs it one context variable read)."""
    logger = logging.getLogger(TASK_RUNS)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
