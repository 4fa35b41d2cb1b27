"""The Transport seam: how requesters and compute nodes talk.

Two kinds of traffic (ARCHITECTURE.md decision 3):
- announcements: `publish(subject, envelope)` to every subscriber, fire and forget;
- work: `request(subject, envelope, timeout)` to the one handler of a subject, which
  answers with a reply envelope (an acknowledged request/reply).

Only JSON crosses a transport: an `Envelope` is a dict of plain data with a message
id, so a receiver can drop duplicates. Subjects are dot-separated words
(`bflow.node.<node id>.run`).
"""

from __future__ import annotations

import abc
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import orjson

from ..errors import BflowError


class TransportError(BflowError):
    retryable = True


class NoResponders(TransportError):
    """Nobody serves the subject of a request (e.g. the node is gone)."""


class RequestTimeout(TransportError):
    """A request got no reply in time."""


@dataclass
class Envelope:
    kind: str
    body: dict[str, Any]
    sender: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    sent: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        """Compact JSON. Raises TypeError for what JSON cannot hold, ValueError for a NaN or an
        infinity. A dict of the fields, not dataclasses.asdict: that deep-copies the body first
        (a third of a bid's cost, profiled). orjson, not json: a bid request encodes in 2-7 us
        beside 22 us, and decodes in 3 us beside 16 us."""
        fields = {"kind": self.kind, "body": self.body, "sender": self.sender, "id": self.id, "sent": self.sent}
        wire = orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS)
        if b"null" in wire:  # orjson writes a NaN or an infinity as null: refuse them as json does
            _refuse_non_finite(fields)
        return wire

    @classmethod
    def decode(cls, data: bytes | str) -> "Envelope":
        """The envelope in `data`. Raises ValueError (orjson.JSONDecodeError) for what is not
        JSON, TypeError for JSON that is not an envelope's fields."""
        fields = orjson.loads(data)
        if not isinstance(fields, dict):
            raise TypeError(f"an envelope is a JSON object, not {type(fields).__name__}")
        return cls(**fields)


def _refuse_non_finite(value: Any) -> None:
    """Raise ValueError for a NaN or an infinity anywhere in `value`, dict keys included.

    A loop over a stack that skips strings and None at once, not a call per key and value:
    nearly every envelope has a None somewhere (so it is walked), and a bid request walked
    the recursive way cost ~23 us, this way ~4 us (profiled: ~40 calls an envelope)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key, inner in item.items():
                if type(key) is not str:
                    stack.append(key)
                if inner is not None and type(inner) is not str:
                    stack.append(inner)
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is str or item is None or kind is int or kind is bool:
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"out of range float values are not JSON compliant: {item!r}")
        elif isinstance(item, dict):  # subclasses, as orjson writes them
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


Handler = Callable[[Envelope], Awaitable[Envelope | None]]


class Subscription(abc.ABC):
    @abc.abstractmethod
    async def unsubscribe(self) -> None: ...


class Transport(abc.ABC):
    """Connects one process to a network. Implementations: memory, nats (plugin)."""

    name = "abstract"

    def __init__(self, url: str | None = None):
        self.url = url

    async def connect(self) -> None:
        """Open the connection. Raises TransportError when the network cannot be reached."""

    async def close(self) -> None:
        """Close the connection; pending requests fail with TransportError."""

    def up_since(self) -> float:
        """`time.monotonic()` when the connection last came up, `math.inf` while it is down.
        A requester lets no lease run out while it is cut off, nor until the nodes have had a
        lease's time to come back after it. 0.0: up for good (memory://)."""
        return 0.0

    def local_host(self) -> str | None:
        """The address of this machine that the network reaches it by: the local end of the
        connection (None when there is no connection to a machine, as in memory://). What a
        gateway beside this process advertises unless told otherwise."""
        return None

    @abc.abstractmethod
    async def publish(self, subject: str, envelope: Envelope) -> None:
        """Announce to every subscriber of `subject`; nobody listening is fine."""

    @abc.abstractmethod
    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        """Call `handler` for every envelope on `subject`. For requests, a returned
        envelope is the reply. Subjects may end in `.*` to match one more word."""

    @abc.abstractmethod
    async def request(self, subject: str, envelope: Envelope, timeout: float) -> Envelope:
        """Send to the handler of `subject` and await its reply.
        Raises NoResponders or RequestTimeout."""
