"""A compute node: bids for shards it can run, reserves capacity when a bid is
accepted (or queues the shard until capacity frees), stages inputs, runs the executor,
and hands the result back, acknowledged, with outputs and logs in its content store.

The protocol is in `protocol.py`. A node never runs one attempt twice: a repeated
accept of a known attempt is acknowledged and ignored.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import random
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import __version__
from ..executors import get_executor
from ..executors.registry import available_executors
from ..errors import BflowError
from ..storage import ContentStore
from ..storage.evict import StoreBudget
from .secrets import SecretError, open_sealed
from .trust import Trust
from ..transports.base import Envelope, Transport, TransportError
from . import protocol as p
from .capacity import CapacityManager
from .liveness import RequesterWatch
from .news import Round, round_for
from .messages import Capacity, NodeInfo, ShardRequest, ShardResult
from .shard_run import run_shard_attempt

log = logging.getLogger("bacalhau_flow.node")

REMEMBERED_ATTEMPTS = 10_000
_IN_THIS_PROCESS: "weakref.WeakSet[ComputeNode]" = weakref.WeakSet()  # for kill_local_work
REPROBE_SECONDS = 10.0  # how often executors it could not offer are tried again


class ComputeNode:
    def __init__(self, transport: Transport, store: ContentStore, work_root: Path, capacity: Capacity, *,
                 node_id: str | None = None, labels: dict[str, str] | None = None,
                 check_seconds: float | None = None, heartbeat_seconds: float = p.HEARTBEAT_SECONDS,
                 max_store: int | None = None, trust: Trust | None = None, attempts_file: Path | None = None,
                 pass_env: list[str] | None = None, allow_paths: list[Path] | None = None):
        self.id = node_id or getattr(transport, "node_id", None) or _random_id()
        self.transport = transport
        self.store = store
        self.work_root = Path(work_root)
        self.capacity = CapacityManager(capacity)
        self.labels = labels or {}
        self.check_seconds = p.CHECK_SECONDS if check_seconds is None else check_seconds
        self.heartbeat_seconds = heartbeat_seconds
        # max_store: evict acknowledged content past this many bytes (storage/evict.py); None: keep
        # all (the embedded nodes share the requester's store, which must keep what its jobs name)
        self.budget = StoreBudget(store, max_store) if max_store is not None else None
        self.trust = trust or Trust.anyone()  # whose shards it runs (network/trust.py)
        # pass_env: names of this process's variables given to every shard (`bflow node --pass-env`);
        # no other variable of the node reaches a shard. allow_paths: the only folders local inputs
        # may be read from (`bflow node --allow-path`; []: none); None: anywhere (the user's own nodes)
        self.pass_env = list(pass_env or [])
        self.allow_paths = [Path(a) for a in allow_paths] if allow_paths is not None else None
        self.identity = getattr(transport, "identity", None)  # None on the unsigned embedded network
        # Attempts accepted by earlier runs of this node: a captured accept replayed after a
        # restart must not run a shard again. One id a line, appended as accepted.
        self.attempts_file = attempts_file
        self._accepted_before = _load_attempts(attempts_file)
        # the executors it offers, and why it cannot offer the others (no Docker engine, say)
        self.executors, self.unavailable = offered_executors()
        self._probed = time.monotonic()
        self._attempts: OrderedDict[str, asyncio.Task] = OrderedDict()  # attempt id -> its run
        # attempts cancelled before their accept arrived (an accept buffered through an outage
        # comes after the requester withdrew it): such an accept is refused
        self._withdrawn: OrderedDict[str, None] = OrderedDict()
        self._undelivered: dict[str, asyncio.Event] = {}  # attempt id -> set to offer its result now
        self._running: dict[str, object] = {}  # attempt id -> executor running it (for cancel)
        self._cancelled: set[str] = set()  # attempts of `_running` cancelled (staging: nothing to kill yet)
        self._queued = 0
        self._pool = ThreadPoolExecutor(max_workers=max(4, int(capacity.cpu * 10)), thread_name_prefix=self.id)
        self._subs: list = []
        self._news: Round | None = None  # the timer it looks for news on, shared (network/news.py)
        self._announced_up = math.inf  # the connection (`up_since`) it last announced itself on
        self._probing: asyncio.Task | None = None  # a look again at the executors it could not offer
        self._announce_pending: asyncio.Task | None = None
        self.started_at = time.time()
        self.gateway: str | None = None  # its IPFS gateway's URL, announced in NodeInfo (set by Devstack)
        self.address: str | None = None  # the host others reach it by, announced too (set by Devstack)
        # the requesters of its attempts: an attempt whose requester stopped naming its job is
        # stopped (network/liveness.py)
        self.requesters = RequesterWatch(transport, self._stop_for_silence)
        _IN_THIS_PROCESS.add(self)

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        self.work_root.mkdir(parents=True, exist_ok=True)
        t = self.transport
        self._subs = [
            await t.subscribe(p.node_subject(self.id, "bid"), self._on_bid),
            await t.subscribe(p.node_subject(self.id, "accept"), self._on_accept),
            await t.subscribe(p.node_subject(self.id, "cancel"), self._on_cancel),
            await t.subscribe(p.node_subject(self.id, "blocks"), self._on_blocks),
            await t.subscribe(p.DISCOVER, self._on_discover),
        ]
        self._announced_up = t.up_since()
        await self.announce()
        self._news = round_for(self.check_seconds)
        self._news.join(self)

    async def stop(self) -> None:
        if self._news is not None:
            self._news.leave(self)
            self._news = None
        for task in (self._probing, self._announce_pending):
            if task:
                task.cancel()
        for sub in self._subs:
            await sub.unsubscribe()
        for executor in list(self._running.values()):
            executor.kill()
        for task in list(self._attempts.values()):
            task.cancel()
        await self.requesters.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def info(self) -> NodeInfo:
        return NodeInfo(id=self.id, version=__version__, executors=self.executors, labels=self.labels,
                        total=self.capacity.total, free=self.capacity.free,
                        running=len(self._running), queued=self._queued, gateway=self.gateway,
                        address=self.address, public_key=getattr(self.identity, "public_key_b64", None),
                        unavailable=self.unavailable)

    async def announce(self, subject: str = p.ANNOUNCE) -> None:
        try:
            await self.transport.publish(subject, Envelope("node_info", self.info().model_dump(), sender=self.id))
        except TransportError as e:  # the network is away; the next announcement will do
            log.debug("announce failed: %s", e)

    def _announce_soon(self, delay: float = 0.25) -> None:
        """One announcement shortly, however many shards end before it goes out."""
        if self._announce_pending is None or self._announce_pending.done():
            async def later() -> None:
                await asyncio.sleep(delay)
                await self.announce()

            self._announce_pending = asyncio.ensure_future(later())

    def look_for_news(self) -> None:
        """Called every `check_seconds` (network/news.py): announce again only with news
        (protocol.py), that is when an executor it could not offer came up, or its connection
        came back (requesters may have dropped it meanwhile), at a random moment within the
        interval, since the nodes of one process look together. Its load is announced as it
        changes (`_announce_soon`)."""
        if self.unavailable and (self._probing is None or self._probing.done()) \
                and time.monotonic() - self._probed > REPROBE_SECONDS:
            self._probing = asyncio.ensure_future(self._probe_again())
        up = self.transport.up_since()
        if up != self._announced_up and up != math.inf:
            self._announced_up = up
            self._announce_soon(random.uniform(0, self.check_seconds))

    async def _probe_again(self) -> None:
        """Ask again for the executors it could not offer (a Docker engine may have started);
        announce when it offers more."""
        self._probed = time.monotonic()
        before = list(self.executors)
        loop = asyncio.get_running_loop()
        offered, unavailable = await loop.run_in_executor(self._pool, offered_executors, list(self.unavailable))
        self.executors = sorted(set(self.executors) | set(offered), key=available_executors().index)
        self.unavailable = unavailable
        if self.executors != before:
            await self.announce()

    # -- handlers ---------------------------------------------------------------
    @p.handles("discover")
    async def _on_discover(self, envelope: Envelope) -> None:
        """Answer on the asker's own subject, at a random moment within its spread."""
        reply = envelope.body.get("reply")
        if not isinstance(reply, str) or not reply.startswith("bflow.requester."):
            await self.announce()  # an asker of an older version: on the common subject
            return
        spread = envelope.body.get("spread")
        spread = min(max(float(spread), 0.0), 10.0) if isinstance(spread, (int, float)) else 0.0
        await asyncio.sleep(random.uniform(0, spread))
        await self.announce(reply)

    def bid(self, request: ShardRequest, selector: dict[str, str], requester: str | None = None) -> p.Bid:
        """Whether this node would take the shard: never, now, or after those queued."""
        refusal = self.trust.refusal(requester or "", request.transform.executor)
        if refusal:
            return p.Bid(node=self.id, accepted=False, never=True, reason=refusal)
        if not self.capacity.could_ever_fit(request.resources):
            return p.Bid(node=self.id, accepted=False, never=True, reason=f"asks more than node {self.id} has")
        if request.transform.executor not in self.executors:
            why = self.unavailable.get(request.transform.executor)
            return p.Bid(node=self.id, accepted=False, never=True,
                         reason=f"{why} on node {self.id}" if why else
                         f"node {self.id} has no {request.transform.executor} executor")
        if any(self.labels.get(k) != v for k, v in selector.items()):
            return p.Bid(node=self.id, accepted=False, never=True, reason=f"node {self.id} lacks labels {selector}")
        ready = self._queued == 0 and self.capacity.free.fits(request.resources)
        return p.Bid(node=self.id, accepted=True, ready=ready, queued=self._queued)

    @p.handles("bid_request")
    async def _on_bid(self, envelope: Envelope) -> Envelope:
        request = ShardRequest.model_validate(envelope.body["request"])
        bid = self.bid(request, envelope.body.get("selector") or {}, envelope.sender)
        return Envelope("bid", bid.model_dump(), sender=self.id)

    @p.handles("accept")
    async def _on_accept(self, envelope: Envelope) -> Envelope:
        request = ShardRequest.model_validate(envelope.body["request"])
        requester = envelope.sender  # signed: results go to whoever holds that key, never elsewhere
        if request.attempt_id in self._accepted_before:
            return Envelope("ack", {"accepted": False, "reason": "accepted before this node restarted"},
                            sender=self.id)
        if request.attempt_id in self._withdrawn:
            return Envelope("ack", {"accepted": False, "reason": "the requester withdrew this attempt"},
                            sender=self.id)
        if request.attempt_id in self._undelivered:  # asked again: its result may have gone unheard
            self._undelivered[request.attempt_id].set()
        if request.attempt_id not in self._attempts:  # a repeated accept is harmless
            bid = self.bid(request, envelope.body.get("selector") or {}, requester)
            if not bid.accepted:
                return Envelope("ack", {"accepted": False, "reason": bid.reason}, sender=self.id)
            self._remember_attempt(request.attempt_id)
            secrets = {"sealed": envelope.body.get("secrets") or {}, "plain": envelope.body.get("secrets_plain") or {}}
            self._attempts[request.attempt_id] = asyncio.ensure_future(self._execute(request, requester, secrets))
            self.requesters.follow(requester, request.job_id, request.attempt_id)
            while len(self._attempts) > REMEMBERED_ATTEMPTS:
                self._attempts.popitem(last=False)
        return Envelope("ack", {"accepted": True}, sender=self.id)

    def _remember_attempt(self, attempt_id: str) -> None:
        if self.attempts_file is not None:
            with open(self.attempts_file, "a") as f:
                f.write(attempt_id + "\n")

    @p.handles("cancel")
    async def _on_cancel(self, envelope: Envelope) -> Envelope:
        attempt_id = envelope.body["attempt_id"]
        executor = self._running.get(attempt_id)
        if executor is not None:
            self._cancelled.add(attempt_id)  # it may be staging: its command must then never start
            executor.kill()
            # a cancel in the instant between that check and the command's start: kill again
            asyncio.get_running_loop().call_later(1.0, lambda: attempt_id in self._running and executor.kill())
        elif attempt_id in self._attempts:
            self._attempts[attempt_id].cancel()  # still queued: never starts
        else:
            self._withdrawn[attempt_id] = None  # its accept has not come (yet): refuse it when it does
            while len(self._withdrawn) > REMEMBERED_ATTEMPTS:
                self._withdrawn.popitem(last=False)
        return Envelope("cancelled", {"cancelled": attempt_id in self._attempts}, sender=self.id)

    async def _stop_for_silence(self, attempt_ids: list[str]) -> None:
        """Stop attempts whose requester is gone (network/liveness.py), as its cancel would."""
        for attempt_id in attempt_ids:
            await self._on_cancel(Envelope("cancel", {"attempt_id": attempt_id}, sender=self.id))

    @p.handles("blocks")
    async def _on_blocks(self, envelope: Envelope) -> Envelope:
        blocks = {}
        for cid in envelope.body["cids"][: 8]:
            if self.store.has(cid):
                blocks[cid] = base64.b64encode(self.store.get_block(cid)).decode()
        return Envelope("blocks", {"blocks": blocks}, sender=self.id)

    # -- running ----------------------------------------------------------------
    async def _execute(self, request: ShardRequest, requester: str, secrets: dict) -> None:
        inputs = request.ipfs_roots()
        self._pin(inputs)
        try:
            opened = self._open_secrets(secrets)
            result = await self._attempt(request, requester, opened)
        except SecretError as e:  # nothing runs with secrets it cannot read
            now = time.time()
            result = ShardResult(job_id=request.job_id, shard_index=request.shard_index, shard_id=request.shard_id,
                                 attempt=request.attempt, node=self.id, state="failed", error=str(e),
                                 retryable=e.retryable, stdout_cid=self.store.put_bytes(b""),
                                 stderr_cid=self.store.put_bytes(f"bflow: {e}\n".encode()), started=now, ended=now)
        finally:
            self.requesters.forget(request.attempt_id)  # its command ended: its result is offered whatever
            self._unpin(inputs)
        if result is None:
            return
        if self.requesters.silenced(request.attempt_id):  # no fault of the shard: it may run again
            result = result.model_copy(update={"state": "failed", "retryable": True,
                                               "error": "stopped: its requester was not heard from"})
        outputs = [c for c in (result.outputs_cid, result.stdout_cid, result.stderr_cid) if c]
        self._pin(outputs)
        # The lease is kept while the result is offered: a requester that did not take it at
        # once (it was asking this node again, say) must not think the node lost.
        beat = asyncio.ensure_future(self._heartbeat(request, requester, {"value": "delivering"}))
        try:
            await self._deliver(result, requester)
        finally:
            beat.cancel()
            self._unpin(outputs)
        self._announce_soon()  # capacity changed: tell the requesters soon
        if self.budget is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, self.budget.evict)

    def _open_secrets(self, secrets: dict) -> dict[str, str]:
        """The shard's secrets: sealed to this node's key on a signed network, or (embedded,
        in the user's own process) as they are."""
        if secrets["sealed"]:
            if self.identity is None:
                raise SecretError("this node has no key to open sealed secrets with")
            return open_sealed(secrets["sealed"], self.identity.signing_key)
        if secrets["plain"] and self.identity is not None:
            raise SecretError("secrets came unsealed over the network: refused")
        return secrets["plain"]

    def _pin(self, roots: list[str]) -> None:
        if self.budget is not None:
            self.budget.pin(roots)

    def _unpin(self, roots: list[str]) -> None:
        if self.budget is not None:
            self.budget.unpin(roots)

    async def _attempt(self, request: ShardRequest, requester: str, secrets: dict[str, str]) -> ShardResult | None:
        """Run the attempt (heartbeating its lease); None when it was cancelled."""
        state = {"value": "queued"}
        beat = asyncio.ensure_future(self._heartbeat(request, requester, state))
        try:
            self._queued += 1
            try:
                gpus = await self.capacity.reserve(request.resources)
            finally:
                self._queued -= 1
            state["value"] = "running"
            try:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._pool, self._run_blocking, request, gpus, secrets)
            finally:
                await self.capacity.release(request.resources, gpus)
        except asyncio.CancelledError:
            beat.cancel()
            return None
        finally:
            beat.cancel()
        return result

    def _run_blocking(self, request: ShardRequest, gpus: list[int], secrets: dict[str, str]) -> ShardResult:
        executor = get_executor(request.transform.executor)
        self._running[request.attempt_id] = executor
        try:
            passed = {name: os.environ[name] for name in self.pass_env if name in os.environ}
            return run_shard_attempt(request, executor, self.store, self.work_root, self.id, gpus,
                                     pass_env=passed, secrets=secrets, allow_paths=self.allow_paths,
                                     cancelled=lambda: request.attempt_id in self._cancelled)
        finally:
            self._running.pop(request.attempt_id, None)
            self._cancelled.discard(request.attempt_id)

    async def _heartbeat(self, request: ShardRequest, requester: str, state: dict) -> None:
        subject = p.requester_subject(requester, "progress")
        while True:  # the accept started the lease: the first beat is due one interval later
            await asyncio.sleep(self.heartbeat_seconds)
            body = p.Progress(attempt_id=request.attempt_id, node=self.id, state=state["value"]).model_dump()
            try:
                await self.transport.publish(subject, Envelope("progress", body, sender=self.id))
            except TransportError:
                pass

    async def _deliver(self, result: ShardResult, requester: str) -> None:
        """Offer the result until the requester acknowledges it (or gives up on us): for
        RESULT_DELIVERY_SECONDS of connection, however long the network is away meanwhile."""
        subject = p.requester_subject(requester, "result")
        deadline = time.monotonic() + p.RESULT_DELIVERY_SECONDS
        body = result.model_dump()
        attempt_id = f"{result.job_id}/{result.shard_index}/{result.attempt}"
        again = self._undelivered[attempt_id] = asyncio.Event()
        try:
            while time.monotonic() < max(deadline, self.transport.up_since() + p.RESULT_DELIVERY_SECONDS):
                again.clear()
                try:
                    # a new envelope each time: a repeat of one the requester dropped would get
                    # the same (no) answer from the replay guard (transports/signing.py)
                    await self.transport.request(subject, Envelope("shard_result", body, sender=self.id),
                                                 p.RESULT_ACK_TIMEOUT)
                    return
                except TransportError as e:
                    log.info("result of %s not yet delivered: %s", result.job_id, e)
                    try:  # a second; at once when the requester asks for the attempt again
                        await asyncio.wait_for(again.wait(), 1.0)
                    except asyncio.TimeoutError:
                        pass
        finally:
            self._undelivered.pop(attempt_id, None)
        log.warning("gave up delivering the result of attempt %s/%s/%s", result.job_id, result.shard_index,
                    result.attempt)


def _load_attempts(path: Path | None) -> set[str]:
    """The attempt ids in `path`, keeping the file to its last REMEMBERED_ATTEMPTS lines."""
    if path is None:
        return set()
    try:
        lines = path.read_text().split()
    except FileNotFoundError:
        return set()
    if len(lines) > REMEMBERED_ATTEMPTS:
        lines = lines[-REMEMBERED_ATTEMPTS:]
        path.write_text("\n".join(lines) + "\n")
    return set(lines)


def _random_id() -> str:
    import uuid

    return "n-" + uuid.uuid4().hex[:16]


def offered_executors(names: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Of the executors installed here (or of `names`), those this node can offer, and why it
    cannot offer each of the others (announced, so a shard no node can run says why)."""
    offered, unavailable = [], {}
    for name in names if names is not None else available_executors():
        try:
            get_executor(name)
            offered.append(name)
        except BflowError as e:
            unavailable[name] = e.message
    return offered, unavailable


def kill_local_work() -> None:
    """Kill the commands of every compute node of this process now (the embedded network's):
    for a process that must end at once (flow/interrupt.py), whose shards would outlive it."""
    for node in list(_IN_THIS_PROCESS):
        for executor in list(node._running.values()):
            try:
                # the local executor's runs: SIGKILL now (its kill() waits a grace for SIGTERM
                # on a timer thread, which would end with this process before it fires)
                runs = getattr(executor, "_running", None)
                for run in list(runs) if isinstance(runs, set) else []:
                    run.stop(graceful=False)
                executor.kill()
            except Exception:  # noqa: BLE001 - leaving: kill what can be killed
                pass
