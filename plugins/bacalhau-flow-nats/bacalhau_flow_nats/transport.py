"""NatsTransport: the Transport seam on a NATS server or cluster, through nats-py.

- URL: `nats://host:port`, or a comma-separated list of servers of one cluster
  (`nats://a:4222,nats://b:4222`; the scheme may be left off after the first).
  `tls://host:port` insists on TLS; credentials may be in the URL (`nats://user:pass@host:port`,
  `nats://token@host:port`). TLS files, credentials files and credentials from the
  environment: security.py. A URL is printed and logged only redacted (`nats://***@host:port`).
- Connecting fails at once, with its own message, when the server refuses the credentials or
  its certificate is not trusted; a file that cannot be read fails before (exit status 2).
- Connection loss: nats-py reconnects forever, with exponential backoff and jitter, and
  re-subscribes by itself; publishes made meanwhile are buffered (up to `pending_size`).
- Subjects are NATS subjects; a subscription may end in `.*` (one more word), as the seam says.
- Requests: a handler's returned Envelope is published to the request's reply subject.
  A handler that raises answers with a `Bflow-Error` header, so the requester fails at
  once with a TransportError; a handler that returns None does not answer (RequestTimeout).
- Handlers run as tasks of their own, so a slow handler never holds up the next message.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
import ssl
import sys
import time
import uuid
from typing import Any

# nats-py imports aiohttp (~20 MB of an idle node's memory) for ws:// servers only. Imported
# with aiohttp hidden, it falls back to its "no websockets" path; `_websockets_on` hands it
# aiohttp when a ws:// or wss:// server is configured.
_HIDE_AIOHTTP = "aiohttp" not in sys.modules
if _HIDE_AIOHTTP:
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` raises ImportError
try:
    from nats import errors as nats_errors
    from nats.aio import transport as nats_transport
    from nats.aio.client import Client
    from nats.aio.msg import Msg
finally:
    if _HIDE_AIOHTTP:
        del sys.modules["aiohttp"]

from bacalhau_flow.transports.base import (
    Envelope,
    Handler,
    NoResponders,
    RequestTimeout,
    Subscription,
    Transport,
    TransportError,
)
from bacalhau_flow.transports.redact import redacted, split_credentials

from .security import ENV_TLS_CA, Security, security

log = logging.getLogger(__name__)


class _QuietTlsClose(logging.Filter):
    """asyncio warns on every TLS connection nats-py closes ("returning true from
    eof_received() has no effect when using ssl"): noise on a terminal, nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietTlsClose())

DEFAULT_URL = "nats://127.0.0.1:4222"
ERROR_HEADER = "Bflow-Error"
_SCHEMES = ("nats", "tls", "ws", "wss")
_START_HINT = (
    "is a nats-server running there? `bflow devstack --transport nats` starts one, or run `nats-server -p 4222`"
)


def parse_servers(url: str | None) -> list[str]:
    """The server URLs in a network URL: `nats://a:4222,b:4222` -> [`nats://a:4222`, `nats://b:4222`]."""
    servers = []
    for part in (url or DEFAULT_URL).split(","):
        part = part.strip()
        if not part:
            continue
        if "://" not in part:
            part = "nats://" + part
        if part.split("://", 1)[0] not in _SCHEMES:
            raise TransportError(
                f"not a NATS server URL: {part!r}",
                hint="use nats://host:port, or several separated by commas for a cluster",
                retryable=False,
            )
        servers.append(part)
    if not servers:
        raise TransportError(f"no NATS server in {url!r}", hint="use nats://host:port", retryable=False)
    return servers


def nats_subject(subject: str, *, wildcard: bool = False) -> str:
    """Check a seam subject (dot-separated words; `.*` at the end to subscribe) and return it for NATS."""
    words = subject.split(".")
    bad = not subject or any(not w or w == ">" or any(c.isspace() for c in w) for w in words)
    stars = [i for i, w in enumerate(words) if "*" in w]
    if stars and not (wildcard and stars == [len(words) - 1] and words[-1] == "*" and len(words) > 1):
        bad = True
    if bad:
        raise TransportError(
            f"bad subject {subject!r}",
            hint="subjects are dot-separated words without spaces; only a subscription may end in `.*`",
            retryable=False,
        )
    return subject


def _websockets_on() -> None:
    """Give nats-py the aiohttp it was imported without (see the imports above)."""
    if getattr(nats_transport, "aiohttp", None) is None:
        import aiohttp

        nats_transport.aiohttp = aiohttp


def _refusal(e: BaseException) -> str | None:
    """Why a server turned a connection down for good: "auth" (the credentials), "untrusted"
    (its certificate), "tls" (another TLS failure, e.g. no client certificate); None otherwise."""
    if isinstance(e, nats_errors.AuthorizationError) or any(
            w in str(e).lower() for w in ("authorization violation", "authentication expired",
                                          "authentication revoked", "user authentication")):
        return "auth"
    if isinstance(e, ssl.SSLCertVerificationError):
        return "untrusted"
    if isinstance(e, ssl.SSLError):
        return "tls"
    return None


def _netloc(nc: Client) -> str:
    url = nc.connected_url
    return (url.hostname or "?") + (f":{url.port}" if url.port else "") if url else "?"


class _NatsSubscription(Subscription):
    def __init__(self, transport: "NatsTransport", sub: Any) -> None:
        self._transport, self._sub, self._done = transport, sub, False

    async def unsubscribe(self) -> None:
        if self._done:
            return
        self._done = True
        self._transport._subs.discard(self)
        if self._transport._closed:
            return  # closing the connection ended every subscription already
        await self._transport._unsubscribe([self._sub])


class NatsTransport(Transport):
    """One process's connection to a NATS network (one server or a cluster)."""

    name = "nats"

    def __init__(
        self,
        url: str | None = None,
        *,
        name: str | None = None,
        connect_timeout: float = 5.0,
        reconnect_wait: float = 0.05,
        max_reconnect_wait: float = 2.0,
        ping_interval: float = 10.0,
        pending_size: int = 8 * 1024 * 1024,
    ):
        super().__init__(url or DEFAULT_URL)
        bare, self._url_credentials = split_credentials(self.url)
        self.servers = parse_servers(bare)  # without credentials: what messages name
        self.client_name = name
        self.connect_timeout = connect_timeout
        self.reconnect_wait = reconnect_wait
        self.max_reconnect_wait = max_reconnect_wait
        self.ping_interval = ping_interval
        self.pending_size = pending_size
        self._nc: Client | None = None
        self._closed = False
        self._connecting: asyncio.Lock | None = None
        self._subs: set[_NatsSubscription] = set()
        self._handling: set[asyncio.Task] = set()  # handler runs in flight
        self._requests: set[asyncio.Task] = set()  # requests awaiting a reply
        self._echo_subject: str | None = None  # our own inbox, for _barrier
        self._echoes: dict[bytes, asyncio.Future] = {}
        self._up_since = 0.0  # monotonic time of the last (re)connection; inf while down

    def __repr__(self) -> str:
        return f"NatsTransport({redacted(self.url)!r})"

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    # -- connection ---------------------------------------------------------------
    async def connect(self) -> None:
        """Connect, waiting up to `connect_timeout` seconds for a server to accept.
        Raises TransportError when none does."""
        await self._client()

    async def _client(self) -> Client:
        if self._closed:
            raise TransportError("this NATS transport is closed", hint="open a new transport", retryable=False)
        if self._nc is not None:
            return self._nc
        self._connecting = self._connecting or asyncio.Lock()
        async with self._connecting:
            if self._nc is None:
                self._nc = await self._open()
        return self._nc

    async def _open(self) -> Client:
        secure = security(self._url_credentials)  # NatsConfigError (exit 2) for a bad file
        if any(s.startswith(("ws://", "wss://")) for s in self.servers):
            _websockets_on()
        nc = Client()
        if secure.public_nkey is not None:
            nc._public_nkey = secure.public_nkey  # an NKey user: nats-py sends it with the signature
        refused: asyncio.Future = asyncio.get_running_loop().create_future()

        async def on_error(e: Exception) -> None:
            if not refused.done():  # connecting: a refusal ends it at once
                if _refusal(e) is not None:
                    refused.set_result(e)
                    return
                log.debug("connecting to NATS: %r", e)
                return
            await self._on_error(e)

        options: dict[str, Any] = dict(
            servers=self.servers,
            name=self.client_name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,  # forever: a node outlives server restarts
            reconnect_time_wait=max(self.reconnect_wait, 0.25),
            connect_timeout=max(1, int(self.connect_timeout)),
            ping_interval=self.ping_interval,
            max_outstanding_pings=3,
            pending_size=self.pending_size,
            error_cb=on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            **secure.options,
        )
        if "reconnect_to_server_handler" in inspect.signature(nc.connect).parameters:
            options["reconnect_to_server_handler"] = self._next_server
        connecting = asyncio.ensure_future(nc.connect(**options))
        try:
            done, _ = await asyncio.wait({connecting, refused}, timeout=self.connect_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if connecting in done:
                connecting.result()
            else:
                connecting.cancel()
                raise refused.result() if refused in done else asyncio.TimeoutError()
        except (asyncio.TimeoutError, OSError, nats_errors.Error) as e:
            if not connecting.done():
                connecting.cancel()
            try:
                await nc.close()
            except Exception:  # noqa: BLE001 - a half-open client; the connect error is what matters
                pass
            raise self._connect_error(e, nc, secure) from None
        finally:
            if not refused.done():
                refused.cancel()  # from now on errors are the connection's (self._on_error)
        if any(s.startswith("tls://") for s in self.servers) and not (nc._server_info or {}).get("tls_required"):
            where = _netloc(nc)
            await nc.close()
            raise TransportError(f"nats-server at {where} does not speak TLS, though the URL says tls://",
                                 hint="give it a `tls { cert_file, key_file }` block, or use nats://", retryable=False)
        log.debug("connected to NATS at %s", _netloc(nc))
        return nc

    def _connect_error(self, e: Exception, nc: Client, secure: Security) -> TransportError:
        current = getattr(nc, "_current_server", None)
        uri = getattr(current, "uri", None)
        where = f"{uri.hostname}:{uri.port}" if uri is not None and uri.hostname else ", ".join(
            s.split("://", 1)[-1] for s in self.servers)
        kind = _refusal(e)
        if kind == "auth":
            return TransportError(
                f"nats-server at {where} refused the credentials (Authorization Violation)",
                hint="check the user and password or token (in the URL, or BFLOW_NATS_USER/BFLOW_NATS_PASSWORD, "
                     "BFLOW_NATS_TOKEN) or the --creds file", retryable=False)
        if kind == "untrusted":
            by = f"--tls-ca {secure.ca}" if secure.ca else "the system's certificate authorities (give --tls-ca FILE)"
            reason = getattr(e, "verify_message", None) or getattr(e, "reason", None) or str(e)
            return TransportError(f"the certificate of {where} is not trusted by {by}: {reason}",
                                  hint=f"--tls-ca (${ENV_TLS_CA}) names the CA that signed the server's certificate",
                                  retryable=False)
        if kind == "tls":
            reason = getattr(e, "reason", None) or str(e)
            return TransportError(
                f"the TLS handshake with {where} failed: {reason}",
                hint="a server that verifies clients needs --tls-cert and --tls-key signed by its CA", retryable=False)
        return TransportError(
            f"cannot reach NATS at {', '.join(self.servers)} within {self.connect_timeout:g}s"
            + (f": {e}" if str(e) else ""),
            hint=_START_HINT,
        )

    def _next_server(self, servers: list, info: dict) -> tuple[Any, float]:
        """nats-py's reconnect hook: the least-tried server, after an exponential backoff with jitter."""
        server = min(servers, key=lambda s: s.reconnects)
        wait = min(self.max_reconnect_wait, self.reconnect_wait * 2 ** min(server.reconnects, 16))
        return server, wait * random.uniform(0.5, 1.0)

    async def _on_error(self, e: Exception) -> None:
        if isinstance(e, (OSError, nats_errors.UnexpectedEOF, nats_errors.StaleConnectionError)):
            log.debug("NATS connection: %r", e)  # expected while a server restarts
        else:
            log.warning("NATS connection error: %r", e)

    async def _on_disconnected(self) -> None:
        self._up_since = math.inf
        if not self._closed and self._nc is not None:
            log.warning("lost the connection to NATS (%s); reconnecting", redacted(self.url))

    async def _on_reconnected(self) -> None:
        self._up_since = time.monotonic()
        nc = self._nc
        log.warning("reconnected to NATS at %s", _netloc(nc) if nc else redacted(self.url))

    def up_since(self) -> float:
        return self._up_since if self.is_connected else math.inf

    def local_host(self) -> str | None:
        """The local address of the connection to the current nats-server: 127.0.0.1 on a
        loopback network, the routable address of this machine's interface on a real one."""
        writer = getattr(getattr(self._nc, "_transport", None), "_io_writer", None)
        sockname = writer.get_extra_info("sockname") if writer is not None else None
        return sockname[0] if sockname else None

    async def close(self) -> None:
        """Close the connection: pending requests fail with TransportError, handlers in flight
        are cancelled, later calls raise TransportError. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        me = asyncio.current_task()
        for task in list(self._requests) + list(self._handling):
            if task is not me:
                task.cancel()
        subs, self._subs = [h._sub for h in self._subs], set()
        if self._nc is not None:
            # Tell the server first, so nothing is routed here once close() returns.
            await self._unsubscribe(subs)
            try:
                await self._nc.close()  # sends what is buffered first
            except Exception as e:  # noqa: BLE001 - closing must not fail
                log.debug("closing NATS: %r", e)

    async def _unsubscribe(self, subs: list) -> None:
        """Remove `subs`; when connected, wait until the server has removed them too."""
        for sub in subs:
            try:
                await sub.unsubscribe()
            except nats_errors.Error as e:  # closed or draining meanwhile: nothing left to remove
                log.debug("unsubscribe from %s: %r", sub.subject, e)
        if subs:
            await self._barrier(timeout=1.0)

    async def _barrier(self, timeout: float) -> None:
        """Wait until the server has processed every command sent so far: publish a token to
        our own inbox and wait for it to come back. (nats-py's flush() is no barrier: it writes
        its PING to the socket ahead of the commands still in its send buffer.)"""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return  # reconnecting: subscriptions are replayed when the connection is back
        token = uuid.uuid4().hex.encode()
        waiter = self._echoes[token] = asyncio.get_running_loop().create_future()
        try:
            if self._echo_subject is None:
                subject = nc.new_inbox()

                async def on_echo(msg: Msg) -> None:
                    echoed = self._echoes.pop(msg.data, None)
                    if echoed is not None and not echoed.done():
                        echoed.set_result(None)

                await nc.subscribe(subject, cb=on_echo)
                self._echo_subject = subject
            await nc.publish(self._echo_subject, token)
            await asyncio.wait_for(waiter, timeout)
        except (nats_errors.Error, asyncio.TimeoutError) as e:
            log.debug("the server did not confirm in %gs: %r", timeout, e)
        finally:
            self._echoes.pop(token, None)

    # -- publish / subscribe --------------------------------------------------------
    async def publish(self, subject: str, envelope: Envelope) -> None:
        """Announce to every subscriber; nobody listening is fine. While reconnecting, buffered."""
        data = envelope.encode()
        nc = await self._client()
        try:
            await nc.publish(nats_subject(subject), data)
        except nats_errors.Error as e:
            raise self._error(e, f"publish on {subject}", len(data)) from e

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        """Call `handler` for each envelope on `subject` (may end in `.*`); its returned
        envelope answers a request. The server knows the interest when this returns."""
        nc = await self._client()

        async def on_msg(msg: Msg) -> None:  # returns at once; the handler runs as a task
            if not self._closed:
                task = asyncio.ensure_future(self._handle(handler, msg))
                self._handling.add(task)
                task.add_done_callback(self._handling.discard)

        try:
            sub = await nc.subscribe(nats_subject(subject, wildcard=True), cb=on_msg)
        except nats_errors.Error as e:
            raise self._error(e, f"subscribe to {subject}") from e
        await self._barrier(timeout=self.connect_timeout)
        handle = _NatsSubscription(self, sub)
        self._subs.add(handle)
        return handle

    async def _handle(self, handler: Handler, msg: Msg) -> None:
        try:
            envelope = Envelope.decode(msg.data)
        except (ValueError, TypeError) as e:
            log.warning("dropped a message on %s that is not an envelope: %s", msg.subject, e)
            await self._answer(msg, None, f"not an envelope: {e}")
            return
        try:
            reply = await handler(envelope)
            data = reply.encode() if (reply is not None and msg.reply) else None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a handler's failure must not end its subscription
            log.warning("the handler of %s failed on a %r envelope", msg.subject, envelope.kind, exc_info=True)
            await self._answer(msg, None, f"{type(e).__name__}: {e}")
            return
        if data is not None:
            await self._answer(msg, data, None)

    async def _answer(self, msg: Msg, data: bytes | None, error: str | None) -> None:
        if not msg.reply or self._closed or self._nc is None:
            return
        headers = None
        if error is not None:
            headers = {ERROR_HEADER: " ".join(error.split())[:500] or "error"}
        try:
            await self._nc.publish(msg.reply, data or b"", headers=headers)
        except nats_errors.Error as e:
            if isinstance(e, nats_errors.MaxPayloadError) and error is None:
                await self._answer(msg, None, f"the reply of {len(data or b'')} bytes is over the server's max_payload")
            else:
                log.warning("could not answer a request on %s: %r", msg.subject, e)

    # -- request / reply --------------------------------------------------------------
    async def request(self, subject: str, envelope: Envelope, timeout: float) -> Envelope:
        """Send to the handler of `subject` and await its reply. Raises NoResponders at once
        when nobody serves the subject, RequestTimeout after `timeout` seconds."""
        data = envelope.encode()
        nc = await self._client()
        call = asyncio.ensure_future(nc.request(nats_subject(subject), data, timeout=timeout))
        self._requests.add(call)
        try:
            msg = await call
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if self._closed and not (me and me.cancelling()):
                raise TransportError(f"the transport was closed while {subject} was being asked") from None
            raise
        except nats_errors.NoRespondersError as e:
            raise NoResponders(f"no node answers on {subject}") from e
        except nats_errors.TimeoutError as e:
            raise RequestTimeout(f"no reply on {subject} within {timeout:g}s") from e
        except nats_errors.Error as e:
            raise self._error(e, f"request on {subject}", len(data)) from e
        finally:
            self._requests.discard(call)
        error = (msg.headers or {}).get(ERROR_HEADER)
        if error is not None:
            raise TransportError(
                f"the handler of {subject} failed: {error}", hint="see the log of the node that serves it"
            )
        try:
            return Envelope.decode(msg.data)
        except (ValueError, TypeError) as e:
            raise TransportError(f"the reply on {subject} is not an envelope: {e}") from e

    def _error(self, e: Exception, doing: str, size: int = 0) -> TransportError:
        if isinstance(e, nats_errors.MaxPayloadError):
            limit = self._nc.max_payload if self._nc else "its"
            return TransportError(
                f"{doing}: the envelope of {size} bytes is over the server's max_payload of {limit} bytes",
                hint="send fewer datums per shard, or raise max_payload in the nats-server config",
                retryable=False,
            )
        if isinstance(e, nats_errors.OutboundBufferLimitError):
            return TransportError(
                f"{doing}: NATS is unreachable and the send buffer is full", hint=_START_HINT, retryable=True
            )
        if isinstance(e, (nats_errors.ConnectionClosedError, nats_errors.ConnectionDrainingError)):
            return TransportError(f"{doing}: the NATS connection is closed", hint="open a new transport")
        return TransportError(f"{doing}: {e!r}")
