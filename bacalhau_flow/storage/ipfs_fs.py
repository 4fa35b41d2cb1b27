"""`ipfs://CID[/path]` as an fsspec filesystem: this machine's content store first, then
IPFS gateways through ipfsspec.

Registered for the `ipfs` protocol by `bacalhau_flow.plan` (replacing ipfsspec's own
registration), so planning (`info`, `find`) and staging (`get`) read `ipfs://` inputs like any
other fsspec url.

Decisions:

- Local first: when `$BFLOW_HOME/store` holds the blocks a call needs, nothing goes over
  the network (the embedded network shares that store, so `bflow add` then `bflow run` just
  works). A missing block anywhere sends the whole call to the gateways; a corrupt one is an
  error (ContentError), never silently re-fetched.
- Remote: the gateways in `IPFS_GATEWAY` (one URL, or several separated by commas or spaces,
  tried in order; unset: ipfsspec's own lookup of `~/.ipfs/gateway` and friends), each
  through ipfsspec's `AsyncIPFSFileSystem`. Every gateway call ends within
  `BFLOW_IPFS_TIMEOUT` seconds (default 30; a file transfer gets one more second per MB):
  a CID that no gateway has (kubo keeps searching) becomes a clear `InputUnreachable`, a
  404 everywhere `InputNotFound`. (ipfsspec's HTTP client also stops any request at 300 s,
  its aiohttp default, which caps one file at about 300 s of transfer.)
- Errors are BflowErrors, never OSErrors, inside listings: fsspec's `walk` silently drops a
  directory whose listing raises an OSError, which would plan a job over part of its input.
  `exists`, `isdir` and `isfile` still answer False for what is not there.
- Verified: ipfsspec checks the blocks of its CAR answers (info, ls) but not the bytes of a
  plain GET, so every file read from a gateway is re-hashed and compared with its CID. The
  check rebuilds the CID with kubo's default layout (256 KiB chunks, balanced; raw leaves for
  CIDv1, dag-pb leaves for CIDv0; a raw CID is one sha2-256), so content added with another
  chunker fails it: `BFLOW_IPFS_VERIFY=0` turns the check off for such content.
- `info` results are cached per filesystem instance: a CID and a path under it never change.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any, Callable

from fsspec.callbacks import DEFAULT_CALLBACK
from fsspec.spec import AbstractFileSystem
from fsspec.utils import isfilelike

from ..errors import BflowError, BlockNotFound, ContentError, InputNotFound, InputUnreachable
from . import dag, unixfs
from .store import ChunkReader, ContentStore

DEFAULT_TIMEOUT_S = 30.0
MIN_RATE = 1e6  # bytes/s a transfer from a gateway may not fall below (on top of the timeout)
INFO_CACHE = 100_000


class IPFSFileSystem(AbstractFileSystem):
    """Read-only `ipfs://` over the local content store and IPFS gateways."""

    protocol = "ipfs"
    root_marker = ""

    def __init__(self, store_root: str | None = None, gateways: str | None = None,
                 timeout: float | None = None, **storage_options):
        super().__init__(**storage_options)
        self._store_root = store_root  # default: $BFLOW_HOME/store, read at each call
        self._gateways = gateways  # default: $IPFS_GATEWAY, read at each call
        self._timeout = timeout  # default: $BFLOW_IPFS_TIMEOUT or 30 s
        self._infos: dict[str, dict] = {}

    @classmethod
    def _strip_protocol(cls, path) -> str:
        path = str(path)
        for prefix in ("ipfs://", "ipfs:", "/ipfs/"):
            if path.startswith(prefix):
                path = path[len(prefix):]
                break
        return "/".join(part for part in path.split("/") if part)

    # -------------------------------------------------------------------- listing

    def info(self, path, **kwargs) -> dict:
        path = self._strip_protocol(path)
        if path in self._infos:
            return self._infos[path]
        found = self._local(path, self._local_info)
        if found is None:
            found = self._remote("info", path)
        return self._remember(found)

    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path)
        listing = self._local(path, self._local_ls)
        if listing is None:
            info = self.info(path)
            listing = [info] if info["type"] != "directory" else self._remote("ls", path, detail=True)
        listing = [self._remember(entry) for entry in listing]
        return listing if detail else [entry["name"] for entry in listing]

    def exists(self, path, **kwargs) -> bool:
        try:
            self.info(path)
            return True
        except (InputNotFound, FileNotFoundError):
            return False

    def isdir(self, path) -> bool:
        return self.exists(path) and self.info(path)["type"] == "directory"

    def isfile(self, path) -> bool:
        return self.exists(path) and self.info(path)["type"] == "file"

    def ukey(self, path) -> str:
        """The CID: by definition an unchanging identifier."""
        return self.info(path)["CID"]

    # -------------------------------------------------------------------- reading

    def cat_file(self, path, start=None, end=None, **kwargs) -> bytes:
        path = self._strip_protocol(path)
        data = self._local(path, lambda store, p: b"".join(dag.read_range(store, self._cid(store, p))),
                           whole_dag=True)
        if data is None:
            info = self.info(path)
            data = self._remote("cat_file", path, size=info.get("size"))
            self._verify(path, info["CID"], io.BytesIO(data))
        return data[start:end]

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if mode != "rb":
            raise NotImplementedError("ipfs:// is read-only")
        path = self._strip_protocol(path)
        reader = self._local(path, lambda store, p: ChunkReader(dag.read_range(store, self._cid(store, p))),
                             whole_dag=True)
        if reader is not None:
            return io.BufferedReader(reader, buffer_size=unixfs.CHUNK_SIZE)
        return io.BytesIO(self.cat_file(path))  # ipfsspec reads a remote file whole, too

    def get_file(self, rpath, lpath, callback=DEFAULT_CALLBACK, outfile=None, **kwargs) -> None:
        rpath = self._strip_protocol(rpath)
        if outfile is None and isfilelike(lpath):
            outfile = lpath
        info = self.info(rpath)
        if info["type"] == "directory":
            if outfile is None:
                os.makedirs(lpath, exist_ok=True)
            return
        callback.set_size(info.get("size"))
        if outfile is not None:
            outfile.write(self.cat_file(rpath))
            return
        Path(lpath).parent.mkdir(parents=True, exist_ok=True)
        local = self._local(rpath, lambda store, p: self._export(store, p, lpath, callback), whole_dag=True)
        if local is None:
            try:
                self._remote("get_file", rpath, lpath, size=info.get("size"))
                with open(lpath, "rb") as f:
                    self._verify(rpath, info["CID"], f)
            except BaseException:
                Path(lpath).unlink(missing_ok=True)  # no partial or unverified copy stays behind
                raise

    @staticmethod
    def _export(store: ContentStore, path: str, lpath: str, callback) -> bool:
        with open(lpath, "wb") as out:
            for piece in dag.read_range(store, dag.resolve(store, path)[-1]):
                out.write(piece)
                callback.relative_update(len(piece))
        return True

    # -------------------------------------------------------------------- local store

    def _store(self) -> ContentStore:
        if self._store_root:
            return ContentStore(Path(self._store_root))
        from ..home import store_root

        return ContentStore(store_root())

    @staticmethod
    def _cid(store: ContentStore, path: str) -> bytes:
        return dag.resolve(store, path)[-1]

    def _local(self, path: str, fn: Callable[[ContentStore, str], Any], whole_dag: bool = False) -> Any:
        """`fn(store, path)` when the local store holds what it needs, else None.
        `whole_dag`: first check that every block under the path is here (a read never
        stops half-way for a missing block)."""
        if not path:
            raise InputNotFound("ipfs:// needs a CID: ipfs://CID[/path]")
        try:
            unixfs.parse_cid(path.split("/", 1)[0])
        except ContentError:
            raise InputNotFound(f"ipfs://{path}: not a valid CID", hint="an input url looks like ipfs://CID[/path]") from None
        store = self._store()
        try:
            if whole_dag:
                dag.blocks(store, self._cid(store, path))
            return fn(store, path)
        except BlockNotFound:
            return None
        except FileNotFoundError:  # the directory is here, complete: the name is not in it
            raise InputNotFound(f"ipfs://{path}: no such file or directory", hint="check the path after the CID") from None

    def _local_info(self, store: ContentStore, path: str) -> dict:
        return _info(path, dag.stat(store, self._cid(store, path)))

    def _local_ls(self, store: ContentStore, path: str) -> list[dict]:
        node = dag.stat(store, self._cid(store, path))
        if not node.is_dir:
            return [_info(path, node)]
        return [_info(f"{path}/{name}", child) for name, child in dag.entries(store, node.cid)]

    def _remember(self, info: dict) -> dict:
        if len(self._infos) >= INFO_CACHE:
            self._infos.clear()
        self._infos[info["name"]] = info
        return info

    # -------------------------------------------------------------------- gateways

    def _timeout_s(self) -> float:
        if self._timeout is not None:
            return float(self._timeout)
        value = os.environ.get("BFLOW_IPFS_TIMEOUT", "")
        try:
            return float(value) if value else DEFAULT_TIMEOUT_S
        except ValueError:
            raise BflowError(f"BFLOW_IPFS_TIMEOUT={value!r} is not a number of seconds") from None

    def _gateway_list(self) -> list[str | None]:
        text = self._gateways if self._gateways is not None else os.environ.get("IPFS_GATEWAY", "")
        found = [g.rstrip("/") for g in re.split(r"[,\s]+", text) if g]
        return found or [None]  # None: ipfsspec looks in its well-known files

    def _remote(self, op: str, path: str, *args, size: int | None = None, **kwargs) -> Any:
        """Call ipfsspec's `_op` on each gateway in turn; the first answer wins. A call may take
        the timeout, plus one second per MB of `size` for a transfer (1 MB/s at the least)."""
        try:
            import aiohttp
            from fsspec.asyn import sync
            from fsspec.exceptions import FSTimeoutError
            from ipfsspec import AsyncIPFSFileSystem
        except ImportError as e:
            raise InputUnreachable(f"ipfs://{path} is not in the local content store, and reading from IPFS "
                                   "gateways needs ipfsspec", hint="pip install 'ipfsspec>=0.6,<0.7'") from e
        timeout = self._timeout_s() + (size or 0) / MIN_RATE
        missing, failures = [], []
        for gateway in self._gateway_list():
            name = gateway or "the configured gateway"
            try:
                remote = AsyncIPFSFileSystem(gateway_addr=gateway)
                return sync(remote.loop, getattr(remote, "_" + op), path, *args, timeout=timeout, **kwargs)
            except FileNotFoundError:
                missing.append(name)
            except (FSTimeoutError, TimeoutError):
                failures.append(f"{name}: no answer within {round(timeout, 1):g} s")
            except RuntimeError as e:
                if "Gateway could not be found" not in str(e):
                    raise
                raise InputUnreachable(f"ipfs://{path} is not in the local content store and no IPFS gateway is set",
                                       hint="set IPFS_GATEWAY=http://HOST:PORT, e.g. a node's gateway "
                                            "(`bflow nodes` lists them) or `bflow gateway` on the machine "
                                            "that has it", retryable=False) from None
            except (aiohttp.ClientError, OSError, ValueError, KeyError, AssertionError) as e:
                failures.append(f"{name}: {type(e).__name__}: {e}".rstrip(": "))
        if failures:
            raise InputUnreachable(f"ipfs://{path}: not in the local content store, and no gateway answered "
                                   f"({'; '.join(failures)})",
                                   hint="check IPFS_GATEWAY and that the gateway has this CID; "
                                        "BFLOW_IPFS_TIMEOUT sets the seconds to wait")
        raise InputNotFound(f"ipfs://{path}: not in the local content store nor on {', '.join(missing)}",
                            hint="check the CID and path; `bflow add` puts local data in the content store")

    def _verify(self, path: str, cid: str, stream) -> None:
        if os.environ.get("BFLOW_IPFS_VERIFY", "1").strip().lower() not in ("0", "false", "no", "off"):
            _check(path, cid, stream)


def _check(path: str, cid: str, stream) -> None:
    """ContentError unless the content rebuilt with kubo's default layout hashes to `cid`
    (a raw CID: the sha2-256 of the whole content, whatever its size)."""
    binary = unixfs.parse_cid(cid)
    code, want = unixfs.cid_multihash(binary)
    if unixfs.cid_codec(binary) == unixfs.RAW and code == unixfs.SHA2_256:
        digest = hashlib.sha256()
        for piece in iter(lambda: stream.read(unixfs.CHUNK_SIZE), b""):
            digest.update(piece)
        ok = digest.digest() == want
    elif unixfs.cid_codec(binary) == unixfs.RAW:
        ok = unixfs.block_matches(binary, stream.read())
    else:
        layout = {"raw_leaves": False, "cid_version": 0} if cid.startswith("Qm") else {}
        ok = unixfs.normalize_cid(unixfs.import_file(stream, **layout).cid) == binary
    if not ok:
        raise ContentError(f"ipfs://{path}: the gateway sent content that does not match its CID {cid}",
                           hint="the gateway is faulty or malicious; or the content was added with another "
                                "chunker than kubo's default: set BFLOW_IPFS_VERIFY=0 to accept it unchecked")


def _info(name: str, node: dag.Node) -> dict:
    if node.is_dir:
        return {"name": name, "CID": node.cid_str, "type": "directory", "size": 0}
    return {"name": name, "CID": node.cid_str, "type": "file", "size": node.size}
