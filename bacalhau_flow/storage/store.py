"""A content store on disk: IPFS blocks keyed by CID, one file per block.

Layout: `<root>/blocks/<last two characters of the CID>/<CID>`, the CID in its CIDv1 base32 form
(a CIDv0 `Qm...` is stored and found under its CIDv1 equivalent). Every block is written to a
temporary file in the same folder and renamed into place, so a reader never sees half a block;
blocks are not fsynced. Every block read back is hashed and checked against its CID.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import ContentError
from . import unixfs
from .unixfs import DAG_PB, RAW, TYPE_DIRECTORY, TYPE_FILE, TYPE_HAMT_SHARD, TYPE_RAW

log = logging.getLogger(__name__)

_FILE_TYPES = (TYPE_FILE, TYPE_RAW)
_temp_names = itertools.count()


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a directory: its name, CID, size in bytes (0 for a directory), kind."""

    name: str
    cid: str
    size: int
    is_dir: bool


class ContentStore:
    """IPFS blocks on disk under `root`, addressed by kubo-compatible UnixFS CIDs.

    Every method that takes a CID raises ContentError naming it when it is not a valid CID, when
    a block it needs is missing, or when a block's bytes do not hash to its CID.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blocks = self.root / "blocks"
        self._blocks = str(self.blocks)

    # ------------------------------------------------------------ adding

    def put_bytes(self, data: bytes) -> str:
        """Store `data` as a UnixFS file; return its CID."""
        return unixfs.import_file(io.BytesIO(data), self._sink).cid_str

    def put_file(self, path: str | os.PathLike) -> str:
        """Store the file at `path` in one streaming pass; return its CID."""
        try:
            with open(path, "rb", buffering=0) as f:
                return unixfs.import_file(f, self._sink).cid_str
        except OSError as e:
            raise ContentError(f"cannot read {path}: {e.strerror}") from e

    def put_tree(self, path: str | os.PathLike) -> str:
        """Store a directory recursively (or a single file); return its CID. Symlinks and special
        files are skipped, never followed: see `put_tree_report` for the list."""
        return self.put_tree_report(path)[0]

    def put_tree_report(self, path: str | os.PathLike) -> tuple[str, list[str]]:
        """Like `put_tree`, also returning the skipped paths (relative, "/"-separated)."""
        result = unixfs.import_tree(path, self._sink)
        if result.skipped:
            log.warning("skipped %d symlink(s) or special file(s) under %s: %s", len(result.skipped),
                        path, ", ".join(result.skipped[:5]) + (" ..." if len(result.skipped) > 5 else ""))
        return result.root.cid_str, result.skipped

    def put_block(self, cid: str, data: bytes) -> None:
        """Store one block after checking that `data` hashes to `cid` (ContentError if not)."""
        binary = self._parse(cid)
        if not unixfs.block_matches(binary, data):
            raise ContentError(f"block {cid} was refused: its content does not match its CID",
                               hint="the sender's copy is corrupt; fetch it from another node")
        self._write(self._path(binary), data)

    # ------------------------------------------------------------ reading

    def has(self, cid: str) -> bool:
        """True if the block `cid` is in the store (its children are not checked)."""
        return os.path.isfile(self._path(self._parse(cid)))

    def get_block(self, cid: str) -> bytes:
        """The bytes of block `cid`, verified against the CID."""
        return self._get(self._parse(cid))

    def cat(self, cid: str) -> bytes:
        """The whole content of a file, in memory: for small files; see `iter_file`."""
        return b"".join(self.iter_file(cid))

    def iter_file(self, cid: str) -> Iterator[bytes]:
        """The content of a file as verified chunks (one per leaf block), in order."""
        yield from self._file_chunks(self._parse(cid), cid)

    def open_file(self, cid: str) -> io.BufferedReader:
        """A read-only binary file object over a file's content, streamed block by block."""
        return io.BufferedReader(ChunkReader(self.iter_file(cid)), buffer_size=unixfs.CHUNK_SIZE)

    def ls(self, cid: str) -> list[Entry]:
        """The entries of a directory, sorted by name."""
        return [Entry(name, unixfs.cid_to_str(child), size, is_dir)
                for name, child, size, is_dir in self._entries(self._parse(cid), cid)]

    def iter_files(self, cid: str) -> Iterator[tuple[str, str, int]]:
        """(relative path, file CID, size) of every file in a tree, sorted by path.
        Empty directories yield nothing."""
        found: list[tuple[str, str, int]] = []
        stack = [("", self._parse(cid))]
        while stack:
            prefix, binary = stack.pop()
            for name, child, size, is_dir in self._entries(binary, cid):
                if is_dir:
                    stack.append((prefix + name + "/", child))
                else:
                    found.append((prefix + name, unixfs.cid_to_str(child), size))
        yield from sorted(found)

    def file_refs(self, cid: str) -> list[tuple[str, unixfs.DagRef]]:
        """(relative path, DagRef) of every file in a tree, sorted by path: each file's DAG as
        its parent directory links it (CID, Tsize, size), so a new directory can link the same
        DAG without reading it (jobs/results.py merges outputs so). Only directory blocks and
        the root blocks of files of more than one chunk are read. Empty directories yield nothing."""
        found: list[tuple[str, unixfs.DagRef]] = []
        stack = [("", self._parse(cid))]
        while stack:
            prefix, binary = stack.pop()
            for name, child, tsize, size, is_dir in self._links(binary, cid):
                if is_dir:
                    stack.append((prefix + name + "/", child))
                else:
                    found.append((prefix + name, unixfs.DagRef(child, tsize, size)))
        found.sort(key=lambda entry: entry[0])
        return found

    def blocks_of(self, cid: str) -> Iterator[str]:
        """Every distinct block CID of a DAG, parents before children. Raw leaves are listed
        without being read, so they need not be in the store (a missing directory or file
        node raises ContentError)."""
        return (unixfs.cid_to_str(binary) for binary, _ in self._walk(cid, lambda binary: True))

    def walk(self, cid: str) -> Iterator[tuple[bytes, bool]]:
        """(binary CID, held here) of each block of a DAG reachable through the blocks held
        here: a missing block is listed, and ends its branch. What a pull still needs, or what
        eviction may delete."""
        return self._walk(cid, lambda binary: os.path.isfile(self._path(binary)))

    def _walk(self, cid: str, held) -> Iterator[tuple[bytes, bool]]:
        """Each distinct block of a DAG, parents before children, with `held(binary)`; the
        links of a held dag-pb block are followed."""
        seen: set[bytes] = set()
        stack = [self._parse(cid)]
        while stack:
            binary = stack.pop()
            if binary in seen:
                continue
            seen.add(binary)
            here = held(binary)
            yield binary, here
            if here and unixfs.cid_codec(binary) == DAG_PB:
                node = self._decode(binary)[0]
                stack.extend(self._link(link, binary) for link in reversed(node.links))

    def block_path(self, cid: str) -> str:
        """Where block `cid` lives (or would) on disk."""
        return self._path(self._parse(cid))

    def export(self, cid: str, dest: str | os.PathLike) -> None:
        """Write a file or tree to `dest`, verifying every block. `dest` must not exist, or be an
        empty directory for a tree; missing parents are created. On any error (ContentError
        naming the bad block) nothing is left behind at `dest`."""
        dest = Path(dest)
        binary = self._parse(cid)
        is_dir = self._kind(binary, cid)[0]
        existed = is_dir and dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir())
        if not existed and os.path.lexists(dest):
            raise ContentError(f"cannot export {cid}: {dest} already exists",
                               hint="choose a new path (or an empty directory for a tree)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._export(binary, cid, dest, is_dir)
        except BaseException:
            for path in (dest.iterdir() if existed else [dest]):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif os.path.lexists(path):
                    path.unlink()
            raise

    # ------------------------------------------------------------ internals

    def _export(self, binary: bytes, cid: str, dest: Path, is_dir: bool) -> None:
        if is_dir:
            dest.mkdir(exist_ok=True)
            for name, child, _size, child_is_dir in self._entries(binary, cid):
                self._export(child, unixfs.cid_to_str(child), dest / name, child_is_dir)
            return
        with open(dest, "xb") as out:
            for chunk in self._file_chunks(binary, cid):
                out.write(chunk)

    def _file_chunks(self, binary: bytes, cid: str) -> Iterator[bytes]:
        if unixfs.cid_codec(binary) == RAW:
            yield self._get(binary)
            return
        node, data = self._decode(binary)
        if data is None or data.type not in _FILE_TYPES:
            raise ContentError(f"{cid} is not a file", hint="use ls or export for a directory")
        if data.data:
            yield data.data
        for link in node.links:
            yield from self._file_chunks(self._link(link, binary), cid)

    def _kind(self, binary: bytes, cid: str, tsize: int | None = None) -> tuple[bool, int]:
        """(is_dir, file size) of a DAG root; a raw leaf's size is the link's Tsize when known."""
        if unixfs.cid_codec(binary) == RAW:
            return False, tsize if tsize is not None else len(self._get(binary))
        data = self._decode(binary)[1]
        if data is not None and data.type == TYPE_HAMT_SHARD:
            raise ContentError(f"{cid} is a HAMT-sharded directory, which this version cannot read")
        if data is None or data.type not in (TYPE_DIRECTORY, *_FILE_TYPES):
            raise ContentError(f"{cid} is not a UnixFS file or directory")
        if data.type == TYPE_DIRECTORY:
            return True, 0
        return False, data.filesize if data.filesize is not None else len(data.data or b"")

    def _entries(self, binary: bytes, cid: str) -> list[tuple[str, bytes, int, bool]]:
        """(name, child CID, size, is_dir) of each entry of directory `binary`."""
        return [(name, child, size, is_dir) for name, child, _tsize, size, is_dir in self._links(binary, cid)]

    def _links(self, binary: bytes, cid: str) -> list[tuple[str, bytes, int, int, bool]]:
        """(name, child CID, Tsize, size, is_dir) of each entry of directory `binary`; a link
        without a Tsize gets the one computed from the child's blocks."""
        node, data = self._decode(binary) if unixfs.cid_codec(binary) == DAG_PB else (None, None)
        if node is None or data is None or data.type != TYPE_DIRECTORY:
            self._kind(binary, cid)  # the precise error for a HAMT or a non-UnixFS node
            raise ContentError(f"{cid} is a file, not a directory", hint="use cat or export for a file")
        entries: list[tuple[str, bytes, int, int, bool]] = []
        names: set[str] = set()
        for link in node.links:
            name = os.fsdecode(link.name or b"")
            if name in ("", ".", "..") or "/" in name or "\0" in name or name in names:
                raise ContentError(f"directory {unixfs.cid_to_str(binary)} has an unsafe entry name {name!r}")
            names.add(name)
            child = self._link(link, binary)
            is_dir, size = self._kind(child, unixfs.cid_to_str(child), link.tsize)
            tsize = link.tsize if link.tsize is not None else self._tsize(child)
            entries.append((name, child, tsize, size, is_dir))
        return entries

    def _tsize(self, binary: bytes) -> int:
        """The cumulative serialized size of a DAG (what a link's Tsize holds), from its blocks."""
        if unixfs.cid_codec(binary) != DAG_PB:
            return len(self._get(binary))
        block = self._get(binary)
        node = self._decode(binary)[0]
        return len(block) + sum(link.tsize if link.tsize is not None else self._tsize(self._link(link, binary))
                                for link in node.links)

    def _decode(self, binary: bytes) -> tuple[unixfs.PBNode, unixfs.UnixFSData | None]:
        block = self._get(binary)
        try:
            node = unixfs.decode_pbnode(block)
            return node, (unixfs.decode_unixfs(node.data) if node.data is not None else None)
        except ValueError as e:
            raise ContentError(f"block {unixfs.cid_to_str(binary)} is not valid dag-pb/UnixFS: {e}") from e

    def _get(self, binary: bytes) -> bytes:
        path = self._path(binary)
        try:
            with open(path, "rb") as f:
                block = f.read()
        except FileNotFoundError:
            raise ContentError(f"{unixfs.cid_to_str(binary)} is not in the content store at {self.root}",
                               hint="fetch it from the node that produced it") from None
        if not unixfs.block_matches(binary, block):
            raise ContentError(f"block {unixfs.cid_to_str(binary)} is corrupt: its content does not match its CID",
                               hint=f"delete {path} and fetch it again")
        return block

    def _parse(self, cid: str) -> bytes:
        if not isinstance(cid, str):
            raise ContentError(f"not a valid CID: {cid!r}")
        return unixfs.parse_cid(cid)

    @staticmethod
    def _link(link: unixfs.PBLink, parent: bytes) -> bytes:
        try:
            return unixfs.normalize_cid(link.cid)
        except ValueError:
            raise ContentError(f"block {unixfs.cid_to_str(parent)} links to an invalid CID") from None

    def _path(self, binary: bytes) -> str:
        # a str by os.path, not a Path: several per block on every shard's hot path (profiled)
        key = unixfs.cid_to_str(binary)
        return os.path.join(self._blocks, key[-2:], key)

    def sink(self, binary: bytes, block: bytes | memoryview) -> None:
        """Keep a block just built here (by storage/unixfs.py's importers, which hashed it)."""
        path = self._path(binary)
        if not os.path.exists(path):
            self._write(path, block)

    _sink = sink

    @staticmethod
    def _write(path: str, block: bytes | memoryview) -> None:
        """Write via a unique temporary file in the same folder, then rename over `path`."""
        folder, name = os.path.split(path)
        temp = os.path.join(folder, f".{name}.{os.getpid()}.{threading.get_ident()}.{next(_temp_names)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(temp, flags, 0o644)
        except FileNotFoundError:  # first block in this folder
            os.makedirs(folder, exist_ok=True)
            fd = os.open(temp, flags, 0o644)
        try:
            with open(fd, "wb") as out:
                out.write(block)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise


class ChunkReader(io.RawIOBase):
    """A raw, read-only file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
