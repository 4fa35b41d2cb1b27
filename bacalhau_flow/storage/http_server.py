"""A small HTTP/1.1 server on asyncio streams, for the IPFS gateway (storage/gateway.py).

Why not aiohttp: importing `aiohttp.web` costs about 20 MB of every idle `bflow node`, and a
gateway needs only GET and HEAD. This module is the generic part: it reads requests, hands
each to one handler coroutine and writes its `Response`; it knows nothing of IPFS.

- Keep-alive: HTTP/1.1 connections stay open unless the client sends `Connection: close`;
  HTTP/1.0 ones only with `Connection: keep-alive`. A fixed body goes out with Content-Length,
  a stream of known length too, one of unknown length chunked (HTTP/1.1) or ended by closing
  the connection (HTTP/1.0).
- HEAD: the headers GET would send, no body (a stream is never started).
- Bounds, so a hostile or broken peer cannot hold memory or a connection for long: the
  request line and headers together at most MAX_HEAD bytes (431 and close past it); an idle
  connection is dropped after IDLE_TIMEOUT_S, and one that takes longer than HEAD_TIMEOUT_S to
  send the rest of its request head, or its body, is dropped as well (slowloris), and so is
  one that stops reading an answer for SEND_TIMEOUT_S. At most MAX_CONNECTIONS connections are
  open at once and MAX_PER_PEER from one address: past either, a new connection is answered
  503 with `Retry-After` and closed (storage/pull.py waits and asks again). A request
  body is read and thrown away (at most MAX_DRAIN bytes; past that the connection closes after
  the answer). A bad request line or header: 400 and close.
- A stream that raises after its headers went out aborts the connection (`transport.abort()`),
  so the client sees a short body, never one that looks complete.
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("bacalhau_flow.http")

MAX_HEAD = 64 * 1024  # request line + headers, bytes
MAX_DRAIN = 1 << 20  # request body bytes read and dropped to keep the connection usable
IDLE_TIMEOUT_S = 75.0  # between requests on a kept-alive connection (and before the first)
HEAD_TIMEOUT_S = 30.0  # from the request line to the end of its headers (and body)
SEND_TIMEOUT_S = 300.0  # for the socket to take one piece of an answer (1 MiB: a 3.5 KB/s floor)


def _connection_cap(most: int = 1024) -> int:
    """Connections open at once, all peers: `most`, or half this process's file limit when
    that is lower (each is a file descriptor, and the node needs others for its shards)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return most if soft == resource.RLIM_INFINITY else max(64, min(most, soft // 2))


MAX_CONNECTIONS = _connection_cap()
MAX_PER_PEER = 256  # open at once from one address (a devstack's nodes share 127.0.0.1)
BUSY_RETRY_AFTER_S = 1  # the Retry-After of a 503 for one connection too many
MAX_LINGERING = 64  # connections turned away and still being answered; past it, just closed
BUSY_LOG_EVERY_S = 60.0  # at most one warning this often about connections turned away
SERVER = "bacalhau-flow"
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(r"^HTTP/(\d)\.(\d)$")
_NO_BODY = {204, 304}


class HTTPError(Exception):
    """Raised by a handler for an answer that is not a success: `status`, a plain-text body."""

    def __init__(self, status: int, text: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(status, text)
        self.status = status
        self.text = text if text is not None else f"{status}: {HTTPStatus(status).phrase}\n"
        self.headers = headers or {}

    def response(self) -> Response:
        return Response(self.status, {**self.headers, "Content-Type": "text/plain; charset=utf-8"},
                        self.text.encode())


class Abort(Exception):
    """Raised by a stream that must not finish (its headers are out): the connection is cut."""


@dataclass
class Request:
    method: str
    target: str  # as sent: percent-encoded path and query
    version: tuple[int, int]
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    raw_path: str = ""
    query_string: str = ""

    def __post_init__(self):
        parts = urlsplit(self.target) if not self.target.startswith("/") else None
        if parts is not None:  # absolute-form (a proxy's request line)
            self.raw_path, self.query_string = parts.path or "/", parts.query
        else:
            self.raw_path, _, self.query_string = self.target.partition("?")

    @property
    def path(self) -> str:
        """The path percent-decoded (UTF-8)."""
        return unquote(self.raw_path)

    @property
    def query(self) -> dict[str, str]:
        """Each query parameter's first value."""
        out: dict[str, str] = {}
        for name, value in parse_qsl(self.query_string, keep_blank_values=True):
            out.setdefault(name, value)
        return out

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens


@dataclass
class Response:
    """`body`: bytes, or an async iterator of pieces (a stream) of `length` bytes when known."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | AsyncIterator[bytes] = b""
    length: int | None = None


Handler = Callable[[Request], Awaitable[Response]]


class HTTPServer:
    """Serve `handler` on host:port; `start()` binds (port 0: any free one), `stop()` closes
    the listening socket and every open connection."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}
        self._per_peer: dict[str, int] = {}
        self.turned_away = 0  # connections answered 503 for being one too many
        self._lingering = 0
        self._warned: float | None = None

    async def start(self, host: str, port: int) -> int:
        """The port listened on. OSError if it cannot bind."""
        self._server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = list(self._connections)
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --------------------------------------------------------------------------- a connection

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_address(writer)
        if len(self._connections) >= MAX_CONNECTIONS or self._per_peer.get(peer, 0) >= MAX_PER_PEER:
            await self._turn_away(reader, writer, peer)
            return
        task = asyncio.current_task()
        self._connections[task] = writer
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the peer went away, or was too slow: nothing to answer
        except asyncio.CancelledError:
            pass  # stop()
        except Exception:  # pragma: no cover - a bug here must not kill the server
            log.exception("http: connection failed")
        finally:
            self._connections.pop(task, None)
            self._per_peer[peer] -= 1
            if not self._per_peer[peer]:
                del self._per_peer[peer]
            if not writer.transport.is_closing():
                writer.transport.close()

    async def _turn_away(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        """Answer 503 to one connection too many (without reading its request) and close it."""
        self.turned_away += 1
        if self._warned is None or time.monotonic() - self._warned > BUSY_LOG_EVERY_S:
            self._warned = time.monotonic()
            log.warning("http: turning connections away (%d so far): %d open, %d from %s; at most %d, "
                        "%d from one address", self.turned_away, len(self._connections),
                        self._per_peer.get(peer, 0), peer, MAX_CONNECTIONS, MAX_PER_PEER)
        if self._lingering >= MAX_LINGERING:  # a flood: not even an answer
            writer.transport.abort()
            return
        busy = HTTPError(503, "too many connections: try again in a moment\n",
                         {"Retry-After": str(BUSY_RETRY_AFTER_S)})
        self._lingering += 1
        try:
            async with asyncio.timeout(2.0):
                await _write(writer, None, busy.response(), keep_alive=False)
                await _linger(reader, writer)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._lingering -= 1
            writer.transport.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read, answer; whether the connection stays open for another request."""
        try:
            async with asyncio.timeout(IDLE_TIMEOUT_S):
                line = await _line(reader)
            if not line:
                return False  # closed between requests
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                request = await _read_head(reader, line)
                drained = await _drain_body(reader, request.headers)
        except HTTPError as e:
            await _write(writer, None, e.response(), keep_alive=False)
            await _linger(reader, writer)
            return False
        keep_alive = request.keep_alive and drained
        try:
            response = await self.handler(request)
        except HTTPError as e:
            response = e.response()
        except Exception:
            log.exception("http: %s %s failed", request.method, request.target)
            response = HTTPError(500).response()
        return await _write(writer, request, response, keep_alive)


def _peer_address(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Before closing on a bad request, read a little of what the peer still sends: closing
    with unread bytes resets the connection, and the peer might never see the answer."""
    if writer.can_write_eof():
        writer.write_eof()
    try:
        async with asyncio.timeout(1.0):
            for _ in range(16):
                if not await reader.read(MAX_HEAD):
                    break
    except (TimeoutError, ConnectionError):
        pass


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # longer than the reader's limit (MAX_HEAD)
        raise HTTPError(431, "request header too large\n") from None


async def _read_head(reader: asyncio.StreamReader, line: bytes) -> Request:
    if not line.endswith(b"\n"):
        raise asyncio.IncompleteReadError(line, None)  # closed mid-line
    size = len(line)
    try:
        method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ")
    except ValueError:
        raise HTTPError(400, "bad request line\n") from None
    match = _VERSION.match(version)
    if not _TOKEN.match(method) or not target or not match:
        raise HTTPError(400, "bad request line\n")
    if match.group(1) != "1":
        raise HTTPError(505)
    headers: dict[str, str] = {}
    while True:
        line = await _line(reader)
        size += len(line)
        if size > MAX_HEAD:
            raise HTTPError(431, "request header too large\n")
        if not line.endswith(b"\n"):
            raise asyncio.IncompleteReadError(line, None)  # closed mid-head
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        name, colon, value = text.partition(":")
        if not colon or not _TOKEN.match(name):  # also a folded line (leading space)
            raise HTTPError(400, "bad header line\n")
        name, value = name.lower(), value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return Request(method, target, (1, int(match.group(2))), headers)


async def _drain_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bool:
    """Read and drop a request body; False when the connection cannot be reused after it."""
    if "transfer-encoding" in headers:
        return False  # a chunked body: not worth parsing to throw away; close after the answer
    length = headers.get("content-length")
    if length is None:
        return True
    if not length.isdigit():
        raise HTTPError(400, "bad Content-Length\n")
    left = int(length)
    if left > MAX_DRAIN:
        return False
    while left:
        left -= len(await reader.readexactly(min(left, 65536)))
    return True


# ------------------------------------------------------------------------------- answers

def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Date: {_date()}", f"Server: {SERVER}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"header {name} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


_last_date: tuple[int, str] = (0, "")


def _date() -> str:
    global _last_date
    now = int(time.time())
    if _last_date[0] != now:
        _last_date = (now, formatdate(now, usegmt=True))
    return _last_date[1]


async def _write(writer: asyncio.StreamWriter, request: Request | None, response: Response,
                 keep_alive: bool) -> bool:
    """Send `response`; whether the connection stays open."""
    body = response.body
    stream = not isinstance(body, (bytes, bytearray))
    headers = dict(response.headers)
    chunked = False
    if response.status in _NO_BODY:
        pass
    elif not stream:
        headers["Content-Length"] = str(len(body))
    elif response.length is not None:
        headers["Content-Length"] = str(response.length)
    elif request is not None and request.version >= (1, 1):
        headers["Transfer-Encoding"] = "chunked"
        chunked = True
    else:
        keep_alive = False  # HTTP/1.0 and no length: the end of the body is the end of the connection
    if not keep_alive:
        headers["Connection"] = "close"
    elif request is not None and request.version < (1, 1):
        headers["Connection"] = "keep-alive"
    try:
        head = _head(response.status, headers)
    except ValueError as e:
        log.error("http: %s", e)
        await _aclose(body)
        return await _write(writer, request, HTTPError(500).response(), keep_alive)
    send_body = request is None or request.method != "HEAD"
    if response.status in _NO_BODY or not send_body or not stream:
        writer.write(head + body if send_body and response.status not in _NO_BODY else head)
        await _aclose(body)
        await _drain(writer)
        return keep_alive
    writer.write(head)
    try:
        async for piece in body:
            if not piece:
                continue
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            await _drain(writer)
    except (ConnectionError, TimeoutError, asyncio.CancelledError):
        await _aclose(body)
        raise
    except Exception as e:  # headers are out: cut the connection, so the body is seen short
        if not isinstance(e, Abort):
            log.exception("http: %s %s failed mid-answer", request.method, request.target)
        writer.transport.abort()
        return False
    if chunked:
        writer.write(b"0\r\n\r\n")
    await _drain(writer)
    return keep_alive


async def _drain(writer: asyncio.StreamWriter) -> None:
    """Wait for the socket to take the bytes written; a peer that stops reading is dropped."""
    async with asyncio.timeout(SEND_TIMEOUT_S):
        await writer.drain()


async def _aclose(body) -> None:
    close = getattr(body, "aclose", None)
    if close is not None:
        await close()
