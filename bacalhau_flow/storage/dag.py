"""Walking UnixFS DAGs in a content store: resolve `CID/a/b`, describe a node, list a
directory, read a byte range of a file, list the blocks a CAR needs.

The gateway and the `ipfs://` filesystem share these. Decisions:

- A block the store lacks raises `BlockNotFound` (checked with `has` before reading), so a
  caller can tell "not here, ask elsewhere" from a corrupt block (`ContentError`).
- A name that is not in a directory, or a path that goes on below a file, raises
  `FileNotFoundError`: content is immutable, so that answer is final, wherever the blocks are.
- A range read uses the `blocksizes` of each file node to skip whole subtrees, so reading the
  end of a large file reads only the blocks it needs; every block read is verified.
- HAMT-sharded directories are not supported here (ContentError), as in the store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

from ..errors import BlockNotFound, ContentError
from . import unixfs
from .store import ContentStore
from .unixfs import DAG_PB, RAW, TYPE_DIRECTORY, TYPE_FILE, TYPE_HAMT_SHARD, TYPE_RAW


@dataclass(frozen=True, slots=True)
class Node:
    """A UnixFS file or directory: its binary CID, kind, and size in bytes (0 for a directory)."""

    cid: bytes
    is_dir: bool
    size: int

    @property
    def cid_str(self) -> str:
        return unixfs.cid_to_str(self.cid)


def block(store: ContentStore, cid: bytes) -> bytes:
    """The verified bytes of one block. BlockNotFound if the store lacks it."""
    text = unixfs.cid_to_str(cid)
    if not store.has(text):
        raise BlockNotFound(f"block {text} is not in the content store at {store.root}")
    return store.get_block(text)


def _decode(store: ContentStore, cid: bytes) -> tuple[unixfs.PBNode, unixfs.UnixFSData]:
    data = block(store, cid)
    try:
        node = unixfs.decode_pbnode(data)
        meta = unixfs.decode_unixfs(node.data or b"")
    except ValueError as e:
        raise ContentError(f"block {unixfs.cid_to_str(cid)} is not valid dag-pb/UnixFS: {e}") from None
    if meta.type == TYPE_HAMT_SHARD:
        raise ContentError(f"{unixfs.cid_to_str(cid)} is a HAMT-sharded directory, which this version cannot read")
    if meta.type not in (TYPE_DIRECTORY, TYPE_FILE, TYPE_RAW):
        raise ContentError(f"{unixfs.cid_to_str(cid)} is not a UnixFS file or directory")
    return node, meta


def _child(link: unixfs.PBLink, parent: bytes) -> bytes:
    try:
        return unixfs.normalize_cid(link.cid)
    except ValueError:
        raise ContentError(f"block {unixfs.cid_to_str(parent)} links to an invalid CID") from None


def stat(store: ContentStore, cid: bytes, tsize: int | None = None) -> Node:
    """What `cid` is. A raw leaf's size is the link's `tsize` when the caller knows it (no read)."""
    if unixfs.cid_codec(cid) == RAW:
        if tsize is not None:
            return Node(cid, False, tsize)
        return Node(cid, False, len(block(store, cid)))
    if unixfs.cid_codec(cid) != DAG_PB:
        raise ContentError(f"{unixfs.cid_to_str(cid)} is neither a raw block nor dag-pb")
    _node, meta = _decode(store, cid)
    if meta.type == TYPE_DIRECTORY:
        return Node(cid, True, 0)
    return Node(cid, False, meta.filesize if meta.filesize is not None else len(meta.data or b""))


def links(store: ContentStore, cid: bytes) -> list[tuple[str, bytes, int | None]]:
    """(name, child CID, Tsize) of each entry of a directory, in link order (sorted by name).
    NotADirectoryError for a file; ContentError for an unsafe or repeated name."""
    if unixfs.cid_codec(cid) != DAG_PB:
        raise NotADirectoryError(unixfs.cid_to_str(cid))
    node, meta = _decode(store, cid)
    if meta.type != TYPE_DIRECTORY:
        raise NotADirectoryError(unixfs.cid_to_str(cid))
    out, names = [], set()
    for link in node.links:
        name = os.fsdecode(link.name or b"")
        if name in ("", ".", "..") or "/" in name or "\0" in name or name in names:
            raise ContentError(f"directory {unixfs.cid_to_str(cid)} has an unsafe entry name {name!r}")
        names.add(name)
        out.append((name, _child(link, cid), link.tsize))
    return out


def entries(store: ContentStore, cid: bytes) -> list[tuple[str, Node]]:
    """(name, Node) of each entry of a directory."""
    return [(name, stat(store, child, tsize)) for name, child, tsize in links(store, cid)]


def resolve(store: ContentStore, path: str) -> list[bytes]:
    """The CIDs along `CID/a/b` (one per segment, the root first; empty segments ignored).
    ContentError for an invalid CID, BlockNotFound for a missing directory block,
    FileNotFoundError for a name that is not there."""
    root, *names = [part for part in path.split("/") if part]
    cids = [unixfs.parse_cid(root)]
    for name in names:
        try:
            found = [child for entry, child, _ in links(store, cids[-1]) if entry == name]
        except NotADirectoryError:
            found = []
        if not found:
            raise FileNotFoundError(path)
        cids.append(found[0])
    return cids


def read_range(store: ContentStore, cid: bytes, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """The bytes [start, end) of a file, as verified pieces (at most one block each)."""
    if end is not None and end <= start:
        return
    if unixfs.cid_codec(cid) == RAW:
        yield block(store, cid)[start:end]
        return
    node, meta = _decode(store, cid)
    if meta.type == TYPE_DIRECTORY:
        raise IsADirectoryError(unixfs.cid_to_str(cid))
    offset = 0
    inline = meta.data or b""
    if inline:
        if start < len(inline):
            yield inline[start:end]
        offset = len(inline)
    if len(meta.blocksizes) != len(node.links):
        raise ContentError(f"file node {unixfs.cid_to_str(cid)} has {len(node.links)} links "
                           f"but {len(meta.blocksizes)} block sizes")
    for link, size in zip(node.links, meta.blocksizes):
        if end is not None and offset >= end:
            return
        if offset + size > start:
            child_end = None if end is None else min(end - offset, size)
            yield from read_range(store, _child(link, cid), max(start - offset, 0), child_end)
        offset += size


def blocks(store: ContentStore, cid: bytes, *, entity: bool = False) -> list[bytes]:
    """Every distinct block of the DAG under `cid`, parents before children, in link order (what
    a CAR with dag-scope=all holds). `entity`: for a directory, only its own block (dag-scope=entity).
    BlockNotFound when any of them is missing, so a caller can answer 404 before sending anything."""
    out: list[bytes] = []
    seen: set[bytes] = set()
    stack = [cid]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if unixfs.cid_codec(current) != DAG_PB:
            block_present(store, current)
            out.append(current)
            continue
        node, meta = _decode(store, current)
        out.append(current)
        if entity and meta.type == TYPE_DIRECTORY:
            continue
        stack.extend(_child(link, current) for link in reversed(node.links))
    return out


def block_present(store: ContentStore, cid: bytes) -> None:
    """BlockNotFound unless the store holds `cid` (not read, not verified)."""
    if not store.has(unixfs.cid_to_str(cid)):
        raise BlockNotFound(f"block {unixfs.cid_to_str(cid)} is not in the content store at {store.root}")
