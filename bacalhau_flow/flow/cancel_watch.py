"""Cancel from the Prefect UI: watch a job's flow run and stop the job when it is cancelled.

The UI's Cancel sets a running flow run to Cancelling. Prefect's flow engine acts on that
only for runs a Prefect runner or worker supervises (it sends them SIGTERM; see
`_engine_owns_cancellation_handling` in prefect/flow_engine.py); a `bflow run` flow run has no
such supervisor, so this poller is its listener. It reads the flow run's state once every
`POLL_SECONDS` (one request per job, whatever its number of shards), on the task runner's event
loop with its shared client, and on Cancelling (or Cancelled, set by force) calls `on_cancel`
once, there, and stops. The job's flow then ends in Cancelled (flow/compile.py): Prefect's
engine proposes that final state itself, so nothing here fights it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from uuid import UUID

POLL_SECONDS = 1.0
STOPPING = ("CANCELLING", "CANCELLED")

log = logging.getLogger(__name__)


async def watch_for_cancel(client, flow_run_id: UUID, on_cancel: Callable[[str], None],
                           every: float = POLL_SECONDS) -> None:
    """Poll flow run `flow_run_id` with the async Prefect `client` until its state is
    Cancelling or Cancelled, then call `on_cancel(reason)`. Runs until then or until cancelled;
    API errors are logged and the next poll tries again (it never raises them)."""
    while True:
        await asyncio.sleep(every)
        try:
            flow_run = await client.read_flow_run(flow_run_id)
        except Exception as e:  # noqa: BLE001 - a busy or restarting server: look again next time
            log.debug("reading flow run %s failed: %s", flow_run_id, e)
            continue
        state = flow_run.state
        if state is not None and state.type.value in STOPPING:
            on_cancel(f"cancelled from Prefect ({state.name}{': ' + state.message if state.message else ''})")
            return
