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
never wrong bytes). Blocks are read in a thread, so the event loop keeps serving.

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
from typing import Iterator
from urllib.parse import quote

from aiohttp import web

from ..errors import BflowError, BlockNotFound, ContentError
from . import dag, unixfs
from .car import car_block, car_header
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
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self) -> str:
        self._runner = web.AppRunner(make_app(self.store, self.stores), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise BflowError(f"cannot serve an IPFS gateway on {self.host}:{self.port}: {e.strerror or e}",
                             hint="choose another port, or 0 for any free port") from None
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked
        host = self.advertise or (self.host if self.host not in ("0.0.0.0", "::", "") else _public_host())
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"
        return self.url

    def url_for(self, node_id: str) -> str:
        """The base URL of one node's store on a gateway of several (`stores`)."""
        return f"{self.url}/n/{node_id}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


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


STORE = web.AppKey("store", ContentStore)
STORES = web.AppKey("stores", dict)


def make_app(store: ContentStore | None, stores: dict[str, ContentStore] | None = None) -> web.Application:
    app = web.Application()
    if store is not None:
        app[STORE] = store
        app.router.add_get("/ipfs/{path:.+}", _handle)  # HEAD too (allow_head)
    if stores is not None:
        app[STORES] = stores
        app.router.add_get("/n/{node}/ipfs/{path:.+}", _handle)
    return app


# ------------------------------------------------------------------------------- request

async def _handle(request: web.Request) -> web.StreamResponse:
    node_id = request.match_info.get("node")
    store = request.app[STORE] if node_id is None else request.app[STORES].get(node_id)
    path = request.match_info["path"]
    if store is None:
        raise web.HTTPNotFound(text=f"no node {node_id} here\n")
    try:
        fmt, scope = _format(request)
        cid_text = path.split("/", 1)[0]
        try:
            unixfs.parse_cid(cid_text)
        except ContentError:
            raise web.HTTPBadRequest(text=f"invalid CID: {cid_text!r}\n") from None
        cids = await _blocking(dag.resolve, store, path)
        headers = {
            "X-Ipfs-Roots": ",".join(unixfs.cid_to_str(c) for c in cids),
            "X-Ipfs-Path": "/ipfs/" + path,
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
    except web.HTTPException:
        raise
    except (FileNotFoundError, BlockNotFound) as e:
        raise web.HTTPNotFound(text=f"not found: /ipfs/{path} ({e})\n") from None
    except ContentError as e:
        status = web.HTTPNotImplemented if "HAMT" in str(e) else web.HTTPInternalServerError
        raise status(text=f"{e}\n") from None


def _format(request: web.Request) -> tuple[str | None, str]:
    """(None | "raw" | "car", dag scope) from ?format= or the Accept header; 400 if unknown."""
    fmt = request.query.get("format")
    accept = request.headers.get("Accept", "")
    if fmt is None:
        fmt = "raw" if RAW_TYPE in accept else "car" if CAR_TYPE in accept else None
    elif fmt not in ("raw", "car"):
        raise web.HTTPBadRequest(text=f"unsupported format {fmt!r}: use raw or car\n")
    scope = request.query.get("dag-scope", "all")
    if scope not in SCOPES:
        raise web.HTTPBadRequest(text=f"unsupported dag-scope {scope!r}: use {', '.join(SCOPES)}\n")
    return fmt, scope


async def _blocking(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args))


def _not_modified(request: web.Request, etag: str) -> bool:
    return request.headers.get("If-None-Match") == etag


# ------------------------------------------------------------------------------- answers

async def _raw(request, store, cid: bytes, headers: dict) -> web.StreamResponse:
    data = await _blocking(dag.block, store, cid)
    etag = f'"{unixfs.cid_to_str(cid)}.raw"'
    if _not_modified(request, etag):
        return web.Response(status=304, headers={**headers, "Etag": etag})
    return web.Response(body=data, content_type=RAW_TYPE,
                        headers={**headers, "Etag": etag, "X-Content-Type-Options": "nosniff"})


async def _car(request, store, cids: list[bytes], scope: str, headers: dict) -> web.StreamResponse:
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
        return web.Response(status=304, headers={**headers, "Etag": etag})
    response = web.StreamResponse(headers={**headers, "Etag": etag, "X-Content-Type-Options": "nosniff",
                                           "Content-Type": f"{CAR_TYPE}; version=1"})
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    await response.write(car_header(terminal))
    try:
        for cid in order:
            data = await _blocking(dag.block, store, cid)
            await response.write(car_block(cid, data))
    except ContentError as e:
        return _abort(request, response, e)
    await response.write_eof()
    return response


def _abort(request: web.Request, response: web.StreamResponse, error: Exception) -> web.StreamResponse:
    """Headers are out: drop the connection, so the client sees a short body, not a good one."""
    log.warning("gateway: aborted %s: %s", request.path, error)
    if request.transport is not None:
        request.transport.abort()
    return response


async def _file(request, store, path: str, node: dag.Node, headers: dict) -> web.StreamResponse:
    etag = f'"{node.cid_str}"'
    if _not_modified(request, etag):
        return web.Response(status=304, headers={**headers, "Etag": etag})
    await _blocking(dag.blocks, store, node.cid)  # every block present, or 404 now
    start, end, status = 0, node.size, 200
    wanted = request.headers.get("Range")
    if wanted:
        parsed = _parse_range(wanted, node.size)
        if parsed is None:
            raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{node.size}"})
        if parsed != (0, node.size):
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{node.size}"
    content_type = mimetypes.guess_type(path.rsplit("/", 1)[-1])[0] if "/" in path else None
    response = web.StreamResponse(status=status, headers={
        **headers, "Etag": etag, "Accept-Ranges": "bytes",
        "Content-Type": content_type or "application/octet-stream"})
    response.content_length = end - start
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    pieces = dag.read_range(store, node.cid, start, end)
    try:
        while piece := await _blocking(_next_piece, pieces):
            await response.write(piece)
    except ContentError as e:
        return _abort(request, response, e)
    await response.write_eof()
    return response


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


async def _listing(request, store, path: str, node: dag.Node, headers: dict) -> web.StreamResponse:
    if not request.path.endswith("/"):
        location = request.path + "/" + (f"?{request.query_string}" if request.query_string else "")
        raise web.HTTPMovedPermanently(location, headers=headers)
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
    return web.Response(text=body, content_type="text/html",
                        headers={**headers, "Etag": f'"{node.cid_str}.dir"'})


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
