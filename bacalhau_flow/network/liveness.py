"""Requester liveness: a node stops the shards of a requester it no longer hears from.

A requester that dies (SIGKILL, a crash, a machine gone) cannot cancel what it started; its
shards would run on to their end for no one. So every requester says, every ALIVE_SECONDS, on
its own subject `bflow.requester.<id>.alive`, which jobs it is driving (`Beacon`): the jobs it
was told it serves (flow/compile.py), and those with an attempt it awaits. A node that runs an
attempt subscribes to its requester's subject (`RequesterWatch`) and stops the attempt (as a
cancel does) once no beacon naming the attempt's job came for SILENT_SECONDS.

An outage of the network is not a requester's death: silence is counted only while the node
itself is connected (`Transport.up_since()`), from the later of the last beacon and the moment
its connection last came back. Requester and nodes cut off from NATS for any time lose nothing
by this: once the node is back it waits SILENT_SECONDS for the requester, which is back by
then too. A requester that comes back as itself (`bflow resume`, the same $BFLOW_HOME key, so
the same id) and names the job in time keeps its shards running; it takes their results.

On a signed network the beacon must be signed by the requester's own key (the envelope's
sender, checked by transports/signing.py, is its id); a beacon from anyone else is ignored.
Attempts whose command has ended are no longer watched: their results are offered to the
requester for RESULT_DELIVERY_SECONDS (network/node.py) whatever it says.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from ..transports.base import Envelope, Transport, TransportError
from . import protocol as p

log = logging.getLogger("bacalhau_flow.liveness")

ALIVE_SECONDS = 2.0  # a requester names the jobs it drives this often
SILENT_SECONDS = 20.0  # no beacon naming a job for this long (while connected): its shards are stopped
CHECK_SECONDS = 1.0  # how often a node looks


def alive_subject(requester_id: str) -> str:
    return p.requester_subject(requester_id, "alive")


class Beacon:
    """The requester's side: publish the jobs `jobs()` names every `every` s (none: nothing)."""

    def __init__(self, transport: Transport, requester_id: str, jobs: Callable[[], set[str]],
                 every: float = ALIVE_SECONDS):
        self.transport, self.requester_id, self.jobs, self.every = transport, requester_id, jobs, every
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def say(self) -> None:
        jobs = sorted(self.jobs())
        if not jobs:
            return
        try:
            await self.transport.publish(alive_subject(self.requester_id),
                                         Envelope("alive", {"jobs": jobs}, sender=self.requester_id))
        except TransportError as e:  # the network is away: the next beacon will do
            log.debug("beacon not sent: %s", e)

    async def _forever(self) -> None:
        while True:
            await self.say()
            await asyncio.sleep(self.every)


class RequesterWatch:
    """The node's side: follow the attempts it runs, by requester and job, and call
    `on_silent(attempt ids)` for those whose requester stopped naming their job."""

    def __init__(self, transport: Transport, on_silent: Callable[[list[str]], object],
                 silent_seconds: float | None = None, every: float | None = None):
        self.transport, self.on_silent = transport, on_silent
        self.silent_seconds = SILENT_SECONDS if silent_seconds is None else silent_seconds
        self.every = CHECK_SECONDS if every is None else every
        self._attempts: dict[str, tuple[str, str]] = {}  # attempt id -> (requester id, job id)
        self._heard: dict[tuple[str, str], float] = {}  # (requester, job) -> monotonic time last named
        self._subs: dict[str, object] = {}  # requester id -> its subscription (or the task making it)
        self._checker: asyncio.Task | None = None
        self._silenced: OrderedDict[str, None] = OrderedDict()  # attempts stopped for silence (the last ones)

    def silenced(self, attempt_id: str) -> bool:
        """Whether the attempt was stopped because its requester went silent."""
        return attempt_id in self._silenced

    def follow(self, requester: str, job_id: str, attempt_id: str) -> None:
        """Watch an attempt just accepted (the accept itself counts as hearing from its requester)."""
        self._attempts[attempt_id] = (requester, job_id)
        self._heard[(requester, job_id)] = time.monotonic()
        if requester not in self._subs:
            self._subs[requester] = asyncio.ensure_future(self._subscribe(requester))
        if self._checker is None or self._checker.done():
            self._checker = asyncio.ensure_future(self._check_forever())

    def forget(self, attempt_id: str) -> None:
        """An attempt whose command ended (or that never ran): no longer stopped for silence."""
        self._attempts.pop(attempt_id, None)

    async def stop(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
        for requester in list(self._subs):
            await self._unsubscribe(requester)

    async def _subscribe(self, requester: str):
        async def on_alive(envelope: Envelope) -> None:
            jobs = envelope.body.get("jobs")
            if envelope.kind != "alive" or envelope.sender != requester or not isinstance(jobs, list):
                return None  # only the requester itself speaks for its jobs
            now = time.monotonic()
            for job in jobs:
                if isinstance(job, str):
                    self._heard[(requester, job)] = now
            return None

        try:
            sub = await self.transport.subscribe(alive_subject(requester), on_alive)
        except TransportError as e:
            log.info("cannot follow requester %s: %s", requester, e)
            self._subs.pop(requester, None)  # tried again at its next accept
            return None
        self._subs[requester] = sub
        return sub

    async def _unsubscribe(self, requester: str) -> None:
        sub = self._subs.pop(requester, None)
        if isinstance(sub, asyncio.Task):
            sub = await sub
        if sub is not None:
            try:
                await sub.unsubscribe()
            except TransportError:
                pass

    async def _check_forever(self) -> None:
        while self._attempts:
            await asyncio.sleep(self.every)
            await self.check()
        await self._drop_idle()  # nothing left to watch: no subscriptions kept open

    async def _drop_idle(self) -> None:
        """Forget the requesters none of whose attempts is watched any more."""
        busy = {r for r, _job in self._attempts.values()}
        self._heard = {k: v for k, v in self._heard.items() if k[0] in busy}
        for requester in [r for r in self._subs if r not in busy]:
            await self._unsubscribe(requester)

    async def check(self) -> list[str]:
        """Stop the attempts whose requester has been silent too long; return their ids."""
        up = self.transport.up_since()
        if math.isinf(up):  # cut off ourselves: nobody can be heard, nobody is at fault
            return []
        now = time.monotonic()
        silent = [a for a, key in self._attempts.items()
                  if now - max(self._heard.get(key, 0.0), up) > self.silent_seconds]
        if not silent:
            return []
        for attempt_id in silent:
            self._attempts.pop(attempt_id, None)
            self._silenced[attempt_id] = None
        while len(self._silenced) > 10_000:
            self._silenced.popitem(last=False)
        log.warning("stopping %d shard attempt(s) whose requester was not heard from for %g s: %s",
                    len(silent), self.silent_seconds, ", ".join(silent[:5]) + (" ..." if len(silent) > 5 else ""))
        outcome = self.on_silent(silent)
        if asyncio.iscoroutine(outcome):
            await outcome
        await self._drop_idle()
        return silent
