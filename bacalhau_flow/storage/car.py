"""CARv1, the IPFS archive format blocks travel in between machines: writing (what the
gateway serves) and reading (what `storage/pull.py` takes in).

A CARv1 is a varint-prefixed DAG-CBOR header `{"roots": [CID], "version": 1}`, then sections,
each `varint(len(CID) + len(data))`, the binary CID, the block's bytes. A reader never trusts a
section: the caller checks every block against its CID before keeping it.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

from ..errors import ContentError
from . import unixfs

MAX_HEADER = 1 << 16  # a header names one root: anything this big is not a CAR
MAX_BLOCK = 4 << 20  # UnixFS blocks are 256 KiB leaves and directory nodes far below this


def car_header(root: bytes) -> bytes:
    """A CARv1 header: varint length, then DAG-CBOR `{"roots": [root], "version": 1}`
    (keys in DAG-CBOR order: shorter first; a CID is tag 42 over 0x00 + its bytes)."""
    link = b"\x00" + root
    cbor = (b"\xa2" + b"\x65roots" + b"\x81" + b"\xd8\x2a" + _cbor_bytes_head(len(link)) + link
            + b"\x67version" + b"\x01")
    return unixfs._varint(len(cbor)) + cbor


def car_block(cid: bytes, data: bytes) -> bytes:
    """One CARv1 section: varint(length of CID + data), CID, data."""
    return unixfs._varint(len(cid) + len(data)) + cid + data


def _cbor_bytes_head(n: int) -> bytes:
    if n < 24:
        return bytes([0x40 + n])
    if n < 256:
        return bytes([0x58, n])
    return bytes([0x59]) + n.to_bytes(2, "big")


def read_car(stream: BinaryIO, root: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
    """(binary CIDv1, block bytes) of each section of the CAR on `stream`, unverified.
    ContentError when the stream is not a CARv1 (whose root is `root`, when given), or
    ends mid-section."""
    header_len = _varint_from(stream, allow_eof=False)
    if header_len is None or header_len > MAX_HEADER:
        raise ContentError("not a CARv1: its header is missing or too long")
    header = _exactly(stream, header_len)
    if root is not None and b"\x00" + root not in header:
        raise ContentError(f"the CAR's root is not {unixfs.cid_to_str(root)}")
    while True:
        length = _varint_from(stream, allow_eof=True)
        if length is None:
            return
        if length > MAX_BLOCK + 128:
            raise ContentError(f"a CAR section of {length} bytes is larger than any block")
        section = _exactly(stream, length)
        cid_len = _cid_length(section)
        try:
            cid = unixfs.normalize_cid(section[:cid_len])
        except ValueError:
            raise ContentError("a CAR section holds an invalid CID") from None
        yield cid, section[cid_len:]


def _cid_length(section: bytes) -> int:
    """The length of the binary CID at the start of a section (CIDv0: a bare 34-byte multihash)."""
    if section[:2] == b"\x12\x20":
        return 34
    try:
        pos = 0
        for _ in range(3):  # version, codec, hash function
            _, pos = unixfs._read_varint(section, pos)
        length, pos = unixfs._read_varint(section, pos)
    except ValueError:
        raise ContentError("a CAR section holds an invalid CID") from None
    if pos + length > len(section):
        raise ContentError("a CAR section is shorter than its CID")
    return pos + length


def _varint_from(stream: BinaryIO, allow_eof: bool) -> int | None:
    result = shift = 0
    while True:
        byte = stream.read(1)
        if not byte:
            if shift == 0 and allow_eof:
                return None
            raise ContentError("the CAR ended in the middle of a section (the sender stopped early)")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ContentError("a CAR section length is not a valid varint")


def _exactly(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ContentError("the CAR ended in the middle of a section (the sender stopped early)")
    return data
