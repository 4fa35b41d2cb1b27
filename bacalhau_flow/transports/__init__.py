"""Transports connect requesters and compute nodes. Found by URL scheme through the
entry point group `bacalhau_flow.transports` (memory://, nats://, tls://)."""

from __future__ import annotations

from ..plugins import Registry
from .base import Envelope, NoResponders, RequestTimeout, Transport, TransportError
from .redact import redacted

TRANSPORTS = Registry(
    "bacalhau_flow.transports",
    "transport",
    {
        "memory": ("bacalhau_flow.transports.memory:MemoryTransport", None),
        # A plugin with its own package (plugins/bacalhau-flow-nats); named here for its install hint.
        "nats": ("bacalhau_flow_nats.transport:NatsTransport",
                 "install the NATS plugin: pip install -e plugins/bacalhau-flow-nats (scripts/setup.sh does)"),
        # NATS over TLS (tls://host:port): the same plugin.
        "tls": ("bacalhau_flow_nats.transport:NatsTransport",
                "install the NATS plugin: pip install -e plugins/bacalhau-flow-nats (scripts/setup.sh does)"),
    },
)


def transport_for(url: str) -> Transport:
    """The transport for a network URL such as `memory://devstack` or `nats://host:4222`."""
    scheme = url.split("://", 1)[0] if "://" in url else url
    return TRANSPORTS.load(scheme)(url)


__all__ = ["Envelope", "NoResponders", "RequestTimeout", "Transport", "TransportError", "redacted", "transport_for"]
