"""A content store served as an IPFS trustless gateway (ARCHITECTURE.md decision 7).

`GET` or `HEAD /ipfs/<cid>[/<path>]`:

- a file: its bytes, streamed block by block (never loaded whole), with Content-Length and a
  single `Range: bytes=a-b` (only the blocks in the range are read);
- a directory: `/ipfs/<dir>` redirects to `/ipfs/<dir>/`, which is an HTML listing whose
  links end in `/` for directories (what fsspec's HTTP filesystem and browsers read);
- `?format=raw` or `Accept: application/vnd.ipld.raw`: the one block the path ends at;
- `?format=car` or `Accept: application/vnd.ipld.car`: a CARv1 whose header root is that
  block's CID, holding the blocks that resolve the path and then, by `dag-scope`, the
  block (`block`), the file or directory node (`entity`), or the whole DAG (`all`, default),
  parents before children.

Every answer carries `X-Ipfs-Roots` (one CID per path segment: what ipfsspec checks),
`X-Ipfs-Path`, an `Etag` and `Cache-Control: public, max-age=29030400, immutable` (a CID never
changes). 400: not a CID, or an unknown format or scope. 404: a CID, path or block the store
lacks; the DAG's blocks are checked before the first byte goes out, so a 200 is complete. A
block found corrupt while streaming aborts the connection (the client sees a short body,
never wrong bytes). Blocks are read in a thread, so the event loop keeps serving. Another
method on those paths: 405; any other path: 404.

Paths arrive percent-encoded (`a%20b.txt`, UTF-8) and are decoded before they are resolved.
The HTTP/1.1 part (keep-alive, timeouts, bounds on a request) is storage/http_server.py: plain
asyncio streams, so an idle node does not carry aiohttp (about 20 MB).

One gateway may serve the stores of several nodes of one process (a devstack process of
thousands of nodes has one server, not thousands): `Gateway(None, stores={...})` answers
`/n/<node id>/ipfs/...` from that node's store, and `url_for(node_id)` is that node's base URL.
"""

from __future__ import annotations

import asyncio
import html
import logging
import mimetypes
import re
from functools import partial
from typing import AsyncIterator, Iterator
from urllib.parse import quote, unquote

from ..errors import BflowError, BlockNotFound, ContentError
from . import dag, unixfs
from .car import car_block, car_header
from .http_server import Abort, HTTPError, HTTPServer, Request, Response
from .store import ContentStore

log = logging.getLogger("bacalhau_flow.gateway")

RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
IMMUTABLE = "public, max-age=29030400, immutable"
SCOPES = ("block", "entity", "all")
PIECE = 1 << 20  # bytes handed to the socket per thread hop (four 256 KiB leaves)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Gateway:
    """An HTTP server for one content store, on the running event loop.

    `port=0` takes any free port; `url` is known once `start()` returns. `advertise`: the
    host others reach it by, when that is not the address it listens on (a gateway listening
    on 0.0.0.0, or behind NAT); by default the listening address, or for 0.0.0.0 this
    machine's name."""

    def __init__(self, store: ContentStore | None, host: str = "127.0.0.1", port: int = 0,
                 advertise: str | None = None, stores: dict[str, ContentStore] | None = None):
        self.store = store
        self.stores = stores  # node id -> its store, served under /n/<node id>/
        self.host = host
        self.port = port
        self.advertise = advertise
        self._server: HTTPServer | None = None
        self.url: str | None = None

    async def start(self) -> str:
        server = HTTPServer(self._route)
        try:
            self.port = await server.start(self.host, self.port)  # the real port when 0 was asked
        except OSError as e:
            raise BflowError(f"cannot serve an IPFS gateway on {self.host}:{self.port}: {e.strerror or e}",
                             hint="choose another port, or 0 for any free port") from None
        self._server = server
        host = self.advertise or (self.host if self.host not in ("0.0.0.0", "::", "") else _public_host())
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"
        return self.url

    def url_for(self, node_id: str) -> str:
        """The base URL of one node's store on a gateway of several (`stores`)."""
        return f"{self.url}/n/{node_id}"

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def _route(self, request: Request) -> Response:
        """`/ipfs/<path>` from `store`, `/n/<node id>/ipfs/<path>` from that node's in `stores`."""
        raw = request.raw_path
        node_id, rest = None, None
        if self.store is not None and raw.startswith("/ipfs/"):
            rest = raw[len("/ipfs/"):]
        elif self.stores is not None and raw.startswith("/n/"):
            node, sep, tail = raw[len("/n/"):].partition("/")
            if node and sep and tail.startswith("ipfs/"):
                node_id, rest = unquote(node), tail[len("ipfs/"):]
        if not rest:
            raise HTTPError(404)
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, headers={"Allow": "GET, HEAD"})
        store = self.store if node_id is None else self.stores.get(node_id)
        return await _handle(request, store, node_id, unquote(rest))


def gateway_for(store: ContentStore | None, transport, host: str | None = None, port: int = 0,
                advertise: str | None = None, stores: dict[str, ContentStore] | None = None) -> Gateway:
    """The gateway beside a node or requester on `transport`'s network. By default it listens
    on, and advertises, the local address of the connection to the network: 127.0.0.1 on a
    loopback network, the interface that reaches the nats-server on a real one. `host` sets
    where it listens (0.0.0.0: everywhere), `advertise` the host others are told."""
    local = transport.local_host() or "127.0.0.1"
    bind = host or local
    return Gateway(store, bind, port, advertise or (local if bind in ("0.0.0.0", "::", "") else None), stores)


def _public_host() -> str:
    import socket

    return socket.getfqdn()


# ------------------------------------------------------------------------------- request

async def _handle(request: Request, store: ContentStore | None, node_id: str | None, path: str) -> Response:
    if store is None:
        raise HTTPError(404, f"no node {node_id} here\n")
    try:
        fmt, scope = _format(request)
        cid_text = path.split("/", 1)[0]
        try:
            unixfs.parse_cid(cid_text)
        except ContentError:
            raise HTTPError(400, f"invalid CID: {cid_text!r}\n") from None
        cids = await _blocking(dag.resolve, store, path)
        headers = {
            "X-Ipfs-Roots": ",".join(unixfs.cid_to_str(c) for c in cids),
            "X-Ipfs-Path": "/ipfs/" + quote(path, safe="/"),  # as a URL path: no line break can reach the head
            "Cache-Control": IMMUTABLE,
        }
        if fmt == "raw":
            return await _raw(request, store, cids[-1], headers)
        if fmt == "car":
            return await _car(request, store, cids, scope, headers)
        node = await _blocking(dag.stat, store, cids[-1])
        if node.is_dir:
            return await _listing(request, store, path, node, headers)
        return await _file(request, store, path, node, headers)
    except HTTPError:
        raise
    except (FileNotFoundError, BlockNotFound) as e:
        raise HTTPError(404, f"not found: /ipfs/{path} ({e})\n") from None
    except ContentError as e:
        raise HTTPError(501 if "HAMT" in str(e) else 500, f"{e}\n") from None


def _format(request: Request) -> tuple[str | None, str]:
    """(None | "raw" | "car", dag scope) from ?format= or the Accept header; 400 if unknown."""
    query = request.query
    fmt = query.get("format")
    accept = request.headers.get("accept", "")
    if fmt is None:
        fmt = "raw" if RAW_TYPE in accept else "car" if CAR_TYPE in accept else None
    elif fmt not in ("raw", "car"):
        raise HTTPError(400, f"unsupported format {fmt!r}: use raw or car\n")
    scope = query.get("dag-scope", "all")
    if scope not in SCOPES:
        raise HTTPError(400, f"unsupported dag-scope {scope!r}: use {', '.join(SCOPES)}\n")
    return fmt, scope


async def _blocking(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args))


def _not_modified(request: Request, etag: str) -> bool:
    return request.headers.get("if-none-match") == etag


# ------------------------------------------------------------------------------- answers

async def _raw(request: Request, store, cid: bytes, headers: dict) -> Response:
    data = await _blocking(dag.block, store, cid)
    etag = f'"{unixfs.cid_to_str(cid)}.raw"'
    if _not_modified(request, etag):
        return Response(304, {**headers, "Etag": etag})
    return Response(200, {**headers, "Etag": etag, "X-Content-Type-Options": "nosniff",
                          "Content-Type": RAW_TYPE}, data)


async def _car(request: Request, store, cids: list[bytes], scope: str, headers: dict) -> Response:
    terminal = cids[-1]
    if scope == "block":
        body = [terminal]
    else:
        body = await _blocking(partial(dag.blocks, store, terminal, entity=scope == "entity"))
    order = list(dict.fromkeys([*cids[:-1], *body]))  # the path's blocks first, each once
    for cid in order:
        dag.block_present(store, cid)  # 404 now, not half-way through the CAR
    etag = f'"{unixfs.cid_to_str(terminal)}.car.{scope}"'
    if _not_modified(request, etag):
        return Response(304, {**headers, "Etag": etag})
    return Response(200, {**headers, "Etag": etag, "X-Content-Type-Options": "nosniff",
                          "Content-Type": f"{CAR_TYPE}; version=1"},
                    _car_stream(request, store, terminal, order))  # length unknown: chunked


async def _car_stream(request: Request, store, terminal: bytes, order: list[bytes]) -> AsyncIterator[bytes]:
    yield car_header(terminal)
    left = iter(order)
    async for piece in _ahead(request, partial(_car_piece, store, left)):
        yield piece


def _car_piece(store, left: Iterator[bytes]) -> bytes:
    """The next block of a CAR, framed; b"" after the last."""
    cid = next(left, None)
    return b"" if cid is None else car_block(cid, dag.block(store, cid))


async def _ahead(request: Request, read) -> AsyncIterator[bytes]:
    """`read()`'s pieces until b"", each read in a thread while the one before is being sent
    (disk and hashing overlap the socket). A ContentError aborts the answer."""
    loop = asyncio.get_running_loop()
    pending = loop.run_in_executor(None, read)
    try:
        while piece := await pending:
            pending = loop.run_in_executor(None, read)
            yield piece
    except ContentError as e:
        raise _abort(request, e) from None
    finally:
        if not pending.cancel() and not pending.cancelled():  # read already, or its thread finishes alone
            pending.exception()  # retrieved, so a read that failed after the client left logs nothing


def _abort(request: Request, error: Exception) -> Abort:
    """Headers are out: the server drops the connection, so the client sees a short body."""
    log.warning("gateway: aborted %s: %s", request.path, error)
    return Abort(str(error))


async def _file(request: Request, store, path: str, node: dag.Node, headers: dict) -> Response:
    etag = f'"{node.cid_str}"'
    if _not_modified(request, etag):
        return Response(304, {**headers, "Etag": etag})
    await _blocking(dag.blocks, store, node.cid)  # every block present, or 404 now
    start, end, status = 0, node.size, 200
    wanted = request.headers.get("range")
    if wanted:
        parsed = _parse_range(wanted, node.size)
        if parsed is None:
            raise HTTPError(416, headers={"Content-Range": f"bytes */{node.size}"})
        if parsed != (0, node.size):
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{node.size}"
    content_type = mimetypes.guess_type(path.rsplit("/", 1)[-1])[0] if "/" in path else None
    return Response(status, {**headers, "Etag": etag, "Accept-Ranges": "bytes",
                             "Content-Type": content_type or "application/octet-stream"},
                    _file_stream(request, store, node.cid, start, end), length=end - start)


async def _file_stream(request: Request, store, cid: bytes, start: int, end: int) -> AsyncIterator[bytes]:
    pieces = dag.read_range(store, cid, start, end)
    async for piece in _ahead(request, partial(_next_piece, pieces)):
        yield piece


def _next_piece(pieces: Iterator[bytes]) -> bytes:
    """Up to PIECE bytes from the block iterator (fewer thread hops for large files)."""
    out = bytearray()
    for piece in pieces:
        out += piece
        if len(out) >= PIECE:
            break
    return bytes(out)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range; the whole file for forms we do not serve
    (several ranges); None if unsatisfiable."""
    match = _RANGE.match(value.strip())
    if not match:
        return (0, size)
    first, last = match.groups()
    if not first and not last:
        return (0, size)
    if not first:  # the last N bytes
        n = int(last)
        return (max(size - n, 0), size) if n > 0 and size > 0 else None
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    return (start, end) if start < size and start < end else None


async def _listing(request: Request, store, path: str, node: dag.Node, headers: dict) -> Response:
    if not request.raw_path.endswith("/"):
        location = request.raw_path + "/" + (f"?{request.query_string}" if request.query_string else "")
        raise HTTPError(301, headers={**headers, "Location": location})
    items = await _blocking(dag.entries, store, node.cid)
    rows = []
    for name, child in items:
        href = quote(name) + ("/" if child.is_dir else "")
        size = "-" if child.is_dir else str(child.size)
        rows.append(f'<tr><td><a href="{html.escape(href)}">{html.escape(name)}{"/" if child.is_dir else ""}'
                    f'</a></td><td>{size}</td><td>{child.cid_str}</td></tr>')
    title = html.escape("/ipfs/" + path.rstrip("/"))
    body = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>\n"
            f"<h1>{title}</h1>\n<table>\n" + "\n".join(rows) + "\n</table>\n</body></html>\n")
    return Response(200, {**headers, "Etag": f'"{node.cid_str}.dir"', "Content-Type": "text/html; charset=utf-8"},
                    body.encode())


# ------------------------------------------------------------------------------- foreground

async def serve(store: ContentStore, host: str, port: int, on_ready) -> None:
    """Serve until cancelled (SIGINT/SIGTERM cancel it from `bflow gateway`)."""
    gateway = Gateway(store, host, port)
    await gateway.start()
    on_ready(gateway.url)
    try:
        await asyncio.Event().wait()
    finally:
        await gateway.stop()
