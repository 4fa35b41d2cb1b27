"""UnixFS CIDs, computed exactly as `ipfs add --cid-version 1 --raw-leaves` (kubo defaults).

A file is cut into fixed 256 KiB chunks. Each chunk is a raw block (codec raw, 0x55). A file of
one chunk *is* that raw block (`bafkrei...`, also for the empty file). Longer files get a
balanced tree of dag-pb (0x70) nodes, at most 174 links each, all leaves at the same depth; a
node's Data is UnixFS `{Type: File, filesize, blocksizes}` and its links have an empty Name and
Tsize = the cumulative serialized size of the child DAG. A directory is one dag-pb node with
UnixFS `{Type: Directory}` and one link per entry, sorted bytewise by name. CIDs are CIDv1,
sha2-256, base32.

`import_tree` matches `ipfs add -r --hidden --cid-version 1`: dotfiles are included and empty
directories kept. It does not follow or store symlinks (kubo stores them as UnixFS Symlink
nodes); they and special files are reported as skipped. File modes and mtimes are not stored
(kubo's default).

Out of scope: HAMT-sharded directories. Kubo shards a directory whose estimated node size passes
256 KiB (thousands of entries, depending on name lengths); for such a directory this module
still builds one flat node, so its CID differs from kubo's. Trickle layout, other chunkers,
inline CIDs and other hash functions are not implemented either.

Everything here streams: a file is read one chunk at a time into a reused buffer, and each block
goes to an optional `sink(cid: bytes, block: bytes | memoryview)` the moment it is made (the
memoryview is only valid during the call). Nothing else is kept but the CIDs of unfinished
tree levels.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from base64 import b32decode, b32encode
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Union

from multiformats import CID, multihash

from ..errors import ContentError

CHUNK_SIZE = 262144
MAX_LINKS = 174

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12

# UnixFS Data.Type values (unixfs.proto)
TYPE_RAW, TYPE_DIRECTORY, TYPE_FILE, TYPE_METADATA, TYPE_SYMLINK, TYPE_HAMT_SHARD = range(6)

Sink = Callable[[bytes, Union[bytes, memoryview]], None]

_RAW_PREFIX = bytes([0x01, RAW, SHA2_256, 32])
_DAG_PB_PREFIX = bytes([0x01, DAG_PB, SHA2_256, 32])


@dataclass(frozen=True, slots=True)
class DagRef:
    """A built DAG: its root CID (binary), cumulative serialized size (what a parent link's
    Tsize holds), and content size (file bytes; for a directory, the sum over its files)."""

    cid: bytes
    tsize: int
    size: int
    is_dir: bool = False

    @property
    def cid_str(self) -> str:
        return cid_to_str(self.cid)


@dataclass(frozen=True, slots=True)
class PBLink:
    """One dag-pb link: binary CID, name bytes (None when absent), Tsize (None when absent)."""

    cid: bytes
    name: bytes | None
    tsize: int | None


@dataclass(frozen=True, slots=True)
class PBNode:
    """A decoded dag-pb block."""

    links: list[PBLink]
    data: bytes | None


@dataclass(frozen=True, slots=True)
class UnixFSData:
    """A decoded UnixFS Data message (the fields this module uses)."""

    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)


@dataclass(slots=True)
class TreeImport:
    """What `import_tree` built, and the relative paths it skipped (symlinks, special files)."""

    root: DagRef
    skipped: list[str]


# ---------------------------------------------------------------- CIDs


# A shard's few CIDs are parsed and printed some twenty times each on its way through the
# requester, the node and the content store (profiled): both are remembered, CIDs never change.
CID_CACHE = 4096


def cid_to_str(cid: bytes) -> str:
    """Format a binary CID: base32 multibase for CIDv1, base58btc (`Qm...`) for CIDv0."""
    return _cid_to_str(cid if type(cid) is bytes else bytes(cid))


@lru_cache(maxsize=CID_CACHE)
def _cid_to_str(cid: bytes) -> str:
    if cid[:1] == b"\x01":
        return "b" + b32encode(cid).decode("ascii").lower().rstrip("=")
    return str(CID.decode(cid))


def parse_cid(text: str) -> bytes:
    """Parse a CID string (any version or multibase `multiformats` knows) to binary CIDv1.

    CIDv0 `Qm...` becomes the equivalent CIDv1 dag-pb. Raises ContentError if it is not a CID.
    """
    if not isinstance(text, str):
        raise ContentError(f"not a valid CID: {text!r}")
    return _parse_cid(text)


@lru_cache(maxsize=CID_CACHE)
def _parse_cid(text: str) -> bytes:
    try:
        if text[:1] == "b" and text.isascii():  # fast path for the canonical form
            body = text[1:].upper()
            return normalize_cid(b32decode(body + "=" * (-len(body) % 8)))
        return normalize_cid(bytes(CID.decode(text)))
    except Exception as e:  # binascii, multiformats and ValueError all mean "not a CID"
        raise ContentError(f"not a valid CID: {text!r}") from e


def normalize_cid(cid: bytes) -> bytes:
    """Check a binary CID and return it as CIDv1 (a CIDv0 is a bare sha2-256 multihash).
    Raises ValueError if it is not a well-formed CID."""
    if len(cid) == 34 and cid[:2] == b"\x12\x20":
        return b"\x01" + bytes([DAG_PB]) + cid
    version, pos = _read_varint(cid, 0)
    _codec, pos = _read_varint(cid, pos)
    _code, pos = _read_varint(cid, pos)
    length, pos = _read_varint(cid, pos)
    if version != 1 or pos + length != len(cid):
        raise ValueError("not a CIDv1")
    return bytes(cid)


def cid_codec(cid: bytes) -> int:
    """The multicodec of a binary CIDv1 (RAW, DAG_PB, ...)."""
    return _read_varint(cid, _read_varint(cid, 0)[1])[0]


def cid_multihash(cid: bytes) -> tuple[int, bytes]:
    """(hash function code, digest) of a binary CIDv1."""
    pos = _read_varint(cid, _read_varint(cid, 0)[1])[1]
    code, pos = _read_varint(cid, pos)
    length, pos = _read_varint(cid, pos)
    return code, cid[pos:pos + length]


def block_matches(cid: bytes, block: bytes | memoryview) -> bool:
    """True if `block` hashes to the digest in `cid` (sha2-256 natively, others via multiformats)."""
    code, digest = cid_multihash(cid)
    if code == SHA2_256:
        return hashlib.sha256(block).digest() == digest
    try:
        return multihash.digest(bytes(block), code) == multihash.wrap(digest, code)
    except Exception:
        return False


def raw_cid(block: bytes | memoryview) -> bytes:
    """Binary CIDv1 of a raw block."""
    return _RAW_PREFIX + hashlib.sha256(block).digest()


def dag_pb_cid(block: bytes, version: int = 1) -> bytes:
    """Binary CID of a dag-pb block; version 0 gives the bare multihash (`Qm...`)."""
    digest = hashlib.sha256(block).digest()
    return (b"\x12\x20" + digest) if version == 0 else _DAG_PB_PREFIX + digest


# ---------------------------------------------------------------- protobuf


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each protobuf field; varints as int, length-delimited as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, value
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated field")
            yield number, buf[pos:pos + length]
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != len(buf):
        raise ValueError("truncated field")


def encode_pblink(cid: bytes, name: bytes, tsize: int) -> bytes:
    """Serialize a PBLink as kubo does: Hash, Name (even when empty), Tsize."""
    return b"\x0a" + _varint(len(cid)) + cid + b"\x12" + _varint(len(name)) + name + b"\x18" + _varint(tsize)


def encode_pbnode(links: Iterable[bytes], data: bytes | None) -> bytes:
    """Serialize a PBNode from already-encoded links; links come before Data (DAG-PB spec)."""
    parts: list[bytes] = []
    for link in links:
        parts += (b"\x12", _varint(len(link)), link)
    if data is not None:
        parts += (b"\x0a", _varint(len(data)), data)
    return b"".join(parts)


def encode_unixfs(type_: int, *, data: bytes | None = None, filesize: int | None = None,
                  blocksizes: Iterable[int] = ()) -> bytes:
    """Serialize a UnixFS Data message (proto2: fields in order, blocksizes not packed)."""
    out = b"\x08" + _varint(type_)
    if data is not None:
        out += b"\x12" + _varint(len(data)) + data
    if filesize is not None:
        out += b"\x18" + _varint(filesize)
    return out + b"".join(b"\x20" + _varint(size) for size in blocksizes)


def decode_pbnode(block: bytes) -> PBNode:
    """Parse a dag-pb block. Raises ValueError if it is malformed."""
    links: list[PBLink] = []
    data = None
    for number, value in _fields(block):
        if number == 2 and isinstance(value, bytes):
            cid, name, tsize = None, None, None
            for n, v in _fields(value):
                if n == 1 and isinstance(v, bytes):
                    cid = v
                elif n == 2 and isinstance(v, bytes):
                    name = v
                elif n == 3 and isinstance(v, int):
                    tsize = v
            if cid is None:
                raise ValueError("link without a Hash")
            links.append(PBLink(cid, name, tsize))
        elif number == 1 and isinstance(value, bytes):
            data = value
        else:
            raise ValueError(f"unexpected PBNode field {number}")
    return PBNode(links, data)


def decode_unixfs(data: bytes) -> UnixFSData:
    """Parse a UnixFS Data message. Raises ValueError if it is malformed or has no Type."""
    type_, payload, filesize, blocksizes = None, None, None, []
    for number, value in _fields(data):
        if number == 1 and isinstance(value, int):
            type_ = value
        elif number == 2 and isinstance(value, bytes):
            payload = value
        elif number == 3 and isinstance(value, int):
            filesize = value
        elif number == 4:
            if isinstance(value, int):
                blocksizes.append(value)
            else:  # packed encoding from other writers
                pos = 0
                while pos < len(value):
                    size, pos = _read_varint(value, pos)
                    blocksizes.append(size)
    if type_ is None:
        raise ValueError("UnixFS Data without a Type")
    return UnixFSData(type_, payload, filesize, blocksizes)


# ---------------------------------------------------------------- files


class _BalancedLayout:
    """Kubo's balanced layout, built bottom-up as leaves stream in.

    `levels[i]` holds finished subtrees of height i that wait for a parent; a level that reaches
    `max_links` becomes one node at once (a full node is the same whatever follows).
    """

    def __init__(self, sink: Sink | None, max_links: int, cid_version: int):
        self.sink, self.max_links, self.cid_version = sink, max_links, cid_version
        self.levels: list[list[DagRef]] = [[]]

    def add(self, leaf: DagRef) -> None:
        self._push(0, leaf)

    def _push(self, level: int, ref: DagRef) -> None:
        if level == len(self.levels):
            self.levels.append([])
        pending = self.levels[level]
        pending.append(ref)
        if len(pending) == self.max_links:
            self.levels[level] = []
            self._push(level + 1, self._node(pending))

    def _node(self, children: list[DagRef]) -> DagRef:
        data = encode_unixfs(TYPE_FILE, filesize=sum(c.size for c in children),
                             blocksizes=[c.size for c in children])
        block = encode_pbnode((encode_pblink(c.cid, b"", c.tsize) for c in children), data)
        cid = dag_pb_cid(block, self.cid_version)
        if self.sink:
            self.sink(cid, block)
        return DagRef(cid, len(block) + sum(c.tsize for c in children), sum(c.size for c in children))

    def finish(self) -> DagRef | None:
        """Close every level; the root is the lone subtree left on the top level."""
        level = 0
        while level < len(self.levels):
            pending = self.levels[level]
            higher = any(self.levels[level + 1:])
            if len(pending) == 1 and not higher:
                return pending[0]
            if pending:
                self.levels[level] = []
                self._push(level + 1, self._node(pending))
            level += 1
        return None


def _read_full(stream: BinaryIO, view: memoryview) -> int:
    """Fill `view` from `stream` unless it ends first; return the byte count."""
    got = 0
    readinto = getattr(stream, "readinto", None)
    while got < len(view):
        if readinto is not None:
            n = readinto(view[got:])
        else:
            piece = stream.read(len(view) - got)
            n = len(piece)
            view[got:got + n] = piece
        if not n:
            break
        got += n
    return got


def import_file(stream: BinaryIO, sink: Sink | None = None, *, chunk_size: int = CHUNK_SIZE,
                max_links: int = MAX_LINKS, raw_leaves: bool = True, cid_version: int = 1) -> DagRef:
    """Chunk and hash one file from a binary stream; return the root of its DAG.

    Each block is handed to `sink` as soon as it exists (children before parents). The defaults
    are `ipfs add --cid-version 1 --raw-leaves`; `raw_leaves=False, cid_version=0` gives kubo's
    legacy CIDv0 DAG (leaves wrapped in dag-pb), kept to check the layout against kubo's
    published CIDv0 vectors.
    """
    if chunk_size < 1 or max_links < 2:
        raise ValueError("chunk_size must be >= 1 and max_links >= 2")
    layout = _BalancedLayout(sink, max_links, cid_version)
    head = _read_head(stream, chunk_size)
    layout.add(_leaf(memoryview(head), sink, raw_leaves, cid_version))
    if len(head) < chunk_size:  # most files: one chunk, read without the reused buffer below
        root = layout.finish()
        assert root is not None
        return root
    buf = memoryview(bytearray(chunk_size))  # zeroing it cost more than hashing a small file
    while True:
        n = _read_full(stream, buf)
        if n == 0:
            break
        layout.add(_leaf(buf[:n], sink, raw_leaves, cid_version))
        if n < chunk_size:
            break
    root = layout.finish()
    assert root is not None
    return root


def _read_head(stream: BinaryIO, size: int) -> bytes:
    """The first `size` bytes of `stream`, fewer only at its end."""
    head = stream.read(size) or b""
    while len(head) < size:
        more = stream.read(size - len(head))
        if not more:
            break
        head += more
    return head


def _leaf(chunk: memoryview, sink: Sink | None, raw_leaves: bool, cid_version: int) -> DagRef:
    if raw_leaves:
        block: bytes | memoryview = chunk
        cid = raw_cid(chunk)
    else:
        data = bytes(chunk) or None  # kubo leaves Data out of an empty leaf
        block = encode_pbnode((), encode_unixfs(TYPE_FILE, data=data, filesize=len(chunk)))
        cid = dag_pb_cid(block, cid_version)
    if sink:
        sink(cid, block)
    return DagRef(cid, len(block), len(chunk))


def bytes_cid(data: bytes, **options) -> str:
    """CID of a file with these bytes (a raw leaf CID when it fits in one chunk)."""
    return import_file(io.BytesIO(data), **options).cid_str


@lru_cache(maxsize=1)
def empty_file_cid() -> str:
    """The CID of an empty file as a content store keeps it: most shards' stdout or stderr."""
    return bytes_cid(b"")


def file_cid(path: str | os.PathLike, **options) -> str:
    """CID of the file at `path`, read in one streaming pass."""
    with open(path, "rb", buffering=0) as f:
        return import_file(f, **options).cid_str


# ---------------------------------------------------------------- directories


_DIRECTORY_DATA = encode_unixfs(TYPE_DIRECTORY)


def build_directory(entries: Iterable[tuple[bytes, DagRef]], sink: Sink | None = None) -> DagRef:
    """One flat UnixFS directory node over (name bytes, child) pairs; links sorted by name."""
    children = sorted(entries, key=lambda e: e[0])
    for (a, _), (b, _) in zip(children, children[1:]):
        if a == b:
            raise ValueError(f"duplicate directory entry {a!r}")
    block = encode_pbnode((encode_pblink(ref.cid, name, ref.tsize) for name, ref in children),
                          _DIRECTORY_DATA)
    cid = dag_pb_cid(block)
    if sink:
        sink(cid, block)
    return DagRef(cid, len(block) + sum(ref.tsize for _, ref in children),
                  sum(ref.size for _, ref in children), is_dir=True)


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def import_tree(path: str | os.PathLike, sink: Sink | None = None, **options) -> TreeImport:
    """Import a directory recursively, or a single file; never follows a symlink.

    Directories are opened with O_NOFOLLOW and walked by file descriptor, so an entry swapped
    for a symlink mid-walk is skipped rather than followed. Skipped paths are relative to `path`,
    "/"-separated. Raises ContentError if `path` is itself a symlink, is missing or unreadable.
    """
    walk = _TreeWalk(Path(path), sink, options)
    try:
        st = os.lstat(walk.top)
    except OSError as e:
        raise ContentError(f"cannot read {walk.top}: {e.strerror}") from e
    if stat.S_ISLNK(st.st_mode):
        raise ContentError(f"{walk.top} is a symlink; symlinks are not followed or stored")
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise ContentError(f"{walk.top} is neither a regular file nor a directory")
    root = walk.entry(None, str(walk.top), "", 0)
    if root is None:  # swapped for a symlink since the lstat
        raise ContentError(f"{walk.top} is a symlink; symlinks are not followed or stored")
    return TreeImport(root, walk.skipped)


MAX_DEPTH = 400  # folders inside each other a tree may have: each holds a descriptor and two frames of
# the walk, which stays under Python's recursion limit (1000; deeper trees failed with a RecursionError)


class TooDeep(ContentError):
    """A tree to import has folders nested past MAX_DEPTH."""


class _TreeWalk:
    """One `import_tree` pass: opens every entry relative to its parent's descriptor."""

    def __init__(self, top: Path, sink: Sink | None, options: dict):
        self.top, self.sink, self.options = top, sink, options
        self.skipped: list[str] = []

    def entry(self, dir_fd: int | None, name: str, rel: str, depth: int) -> DagRef | None:
        """Import `name` (relative to `dir_fd`, `depth` folders below the top); None if it is
        skipped. Raises ContentError (not retryable) for folders nested past MAX_DEPTH."""
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                if depth > MAX_DEPTH:
                    raise TooDeep(f"{self.top} holds folders nested more than {MAX_DEPTH} deep; such a "
                                  f"tree is not stored", hint="flatten it, or store it as one archive file")
                fd = os.open(name, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW, dir_fd=dir_fd)
                try:
                    return self.directory(fd, rel, depth)
                finally:
                    os.close(fd)
            if stat.S_ISREG(mode):
                fd = os.open(name, os.O_RDONLY | _O_NOFOLLOW, dir_fd=dir_fd)
                with open(fd, "rb", buffering=0) as f:
                    return import_file(f, self.sink, **self.options)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):  # those: became a symlink meanwhile
                where = self.top / rel if rel else self.top
                raise ContentError(f"cannot read {where}: {e.strerror}") from e
        self.skipped.append(rel)  # symlink, fifo, socket, device
        return None

    def directory(self, fd: int, rel: str, depth: int) -> DagRef:
        with os.scandir(fd) as it:
            names = [entry.name for entry in it]
        entries = []
        for name in names:
            ref = self.entry(fd, name, f"{rel}/{name}" if rel else name, depth + 1)
            if ref is not None:
                entries.append((os.fsencode(name), ref))
        return build_directory(entries, self.sink)


def tree_cid(path: str | os.PathLike, **options) -> str:
    """CID of a directory tree (or single file) at `path`, as `ipfs add -r --cid-version 1`."""
    return import_tree(path, **options).root.cid_str
