"""A hostile client on a bflow network, for tests: what anyone who can reach the transport may
try. It holds a key of its own (so it signs like everyone else), sniffs every subject, sends
accepts and reports in its own name, and replays what it saw, verbatim, to other subjects and
mutated. The suite in tests/network/test_hostile.py runs it against every URL transport.

    async with Hostile(url) as attacker:
        await attacker.sniff()                  # record everything on `>`
        await attacker.accept(node_id, request)  # an accept from an untrusted key
        await attacker.replay_everything()       # every captured message to every subject seen
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from ..network import protocol as p
from ..network.identity import Identity
from ..network.messages import ShardRequest, ShardResult
from ..transports import transport_for
from ..transports.base import Envelope, TransportError
from ..transports.signing import SignedTransport


@dataclass
class Captured:
    subject: str
    data: bytes


@dataclass
class Hostile:
    url: str
    identity: Identity = field(default_factory=Identity.generate)
    seen: list[Captured] = field(default_factory=list)

    async def __aenter__(self) -> "Hostile":
        import nats  # the attacker needs no bflow code to sniff: a plain nats-py client

        self.transport = SignedTransport(transport_for(self.url), self.identity)
        await self.transport.connect()
        self._raw = await nats.connect(self.url)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._raw.close()
        await self.transport.close()

    @property
    def id(self) -> str:
        return self.identity.node_id

    async def sniff(self) -> None:
        async def keep(msg) -> None:
            self.seen.append(Captured(msg.subject, msg.data))

        await self._raw.subscribe(">", cb=keep)

    def wire_text(self) -> str:
        """Everything sniffed, as one text (to look for a secret in)."""
        return "\n".join(c.data.decode(errors="replace") for c in self.seen)

    async def accept(self, node: str, request: ShardRequest) -> dict | None:
        """Ask `node` to run `request` for this key; the node's answer, or None if none came."""
        body = {"request": request.model_dump(), "selector": {}, "requester": self.id}
        try:
            reply = await self.transport.request(p.node_subject(node, "accept"), Envelope("accept", body), 3.0)
            return reply.body
        except TransportError:
            return None

    async def report(self, requester: str, result: ShardResult) -> None:
        """Progress and a result for someone else's attempt, in this key's name."""
        attempt_id = f"{result.job_id}/{result.shard_index}/{result.attempt}"
        progress = p.Progress(attempt_id=attempt_id, node=result.node, state="running").model_dump()
        await self.transport.publish(p.requester_subject(requester, "progress"), Envelope("progress", progress))
        try:
            await self.transport.request(p.requester_subject(requester, "result"),
                                         Envelope("shard_result", result.model_dump()), 1.0)
        except TransportError:
            pass  # a forged result gets no answer

    async def replay_everything(self, mutate: bool = True) -> int:
        """Resend every captured message to its own subject and to every other subject seen
        (and, with `mutate`, copies with their time or body changed); return how many went out."""
        subjects = {c.subject for c in self.seen if not c.subject.startswith("_INBOX")}
        for subject in list(subjects):  # every verb of every node seen, also those it was never sent
            parts = subject.split(".")
            if subject.startswith("bflow.node.") and len(parts) == 4:
                subjects.update(f"bflow.node.{parts[2]}.{verb}" for verb in ("bid", "accept", "cancel", "blocks"))
        subjects = sorted(subjects)
        sent = 0
        for captured in list(self.seen):
            copies = [captured.data] + (_mutations(captured.data) if mutate else [])
            for subject in subjects:
                for data in copies:
                    await self._raw.publish(subject, data)
                    sent += 1
        await self._raw.flush()
        await asyncio.sleep(1.0)  # let the receivers handle them
        return sent


def _mutations(data: bytes) -> list[bytes]:
    """The message re-stamped as sent now, and with its body's attempt moved on by one."""
    try:
        envelope = json.loads(data)
    except ValueError:
        return []
    import time

    fresh = dict(envelope, sent=time.time())
    out = [json.dumps(fresh).encode()]
    body = envelope.get("body")
    if isinstance(body, dict) and isinstance(body.get("request"), dict):
        request = dict(body["request"], attempt=body["request"].get("attempt", 1) + 1)
        out.append(json.dumps(dict(envelope, body=dict(body, request=request))).encode())
    return out
