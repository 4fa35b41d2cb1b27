"""Copy a DAG from another node's content store into this one, block by block, verifying
every block against its CID before it is stored (a tampered block fails the copy)."""

from __future__ import annotations

from typing import Awaitable, Callable

from ..errors import ContentError
from . import unixfs
from .store import ContentStore

GetBlocks = Callable[[list[str]], Awaitable[dict[str, bytes]]]
BATCH = 2  # blocks per request: two 256 KiB leaves stay under NATS's 1 MB message limit


async def fetch_dag(store: ContentStore, cid: str, get_blocks: GetBlocks) -> int:
    """Make every block of `cid` present in `store`; return how many were fetched.
    Raises ContentError when a block is missing remotely or does not match its CID."""
    fetched = 0
    pending = [cid]
    seen: set[str] = set()
    while pending:
        batch, pending = pending[:BATCH], pending[BATCH:]
        missing = [c for c in batch if not store.has(c)]
        if missing:
            blocks = await get_blocks(missing)
            for c in missing:
                if c not in blocks:
                    raise ContentError(f"block {c} of {cid} is not on the node that produced it")
                store.put_block(c, blocks[c])  # verifies the hash
                fetched += 1
        for c in batch:
            seen.add(c)
            binary = unixfs.parse_cid(c)
            if unixfs.cid_codec(binary) == unixfs.DAG_PB:
                node = unixfs.decode_pbnode(store.get_block(c))
                for link in node.links:
                    child = unixfs.cid_to_str(link.cid)
                    if child not in seen:
                        pending.append(child)
    return fetched
