"""Pulling a DAG into a content store over HTTP: how blocks travel between machines.

Whoever needs blocks (a node staging an `ipfs://` input, a requester collecting a shard's
outputs) names the CID and the providers that may hold it: base URLs of bflow gateways
(storage/gateway.py), the requester's own and the nodes'. The blocks on the way to a path
come first (`/ipfs/CID/path?format=car&dag-scope=block`), then `pull` finds what is missing
under it (walking the blocks already present, so what an earlier shard or attempt brought is
not fetched again: a new shard's directory may hold files held already) and fetches each
missing subtree as one CARv1 stream, up to PARALLEL_PULLS at a time; when more subtrees than
that are missing, the whole path comes as one stream instead (blocks held are not written
again). Providers are tried in order: one that does not answer, lacks
the CID or sends a block that does not hash to its CID is skipped for the next; one that is
busy (503, too many connections) is asked again after its `Retry-After`, for at most
BUSY_WAIT_S in all, before it is skipped too. Every block is
checked before it is stored; what a provider sent correctly stays, so the next one is asked
only for the rest. Plain `http.client` on threads: one stream runs at disk speed (bench/
transfer_bench.py), and the callers are threads already.
"""

from __future__ import annotations

import http.client
import logging
import random
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator, Sequence
from urllib.parse import quote, urlsplit

from ..errors import BlockNotFound, ContentError
from . import dag, unixfs
from .car import read_car
from .store import ContentStore

log = logging.getLogger(__name__)

PARALLEL_PULLS = 8  # subtrees fetched at the same time
CONNECT_TIMEOUT_S = 5.0  # a provider that cannot be reached fails fast, so the next one is tried
READ_TIMEOUT_S = 30.0  # between two reads of one stream
WRITERS = 4  # threads checking and writing the blocks of one stream
IN_FLIGHT = 32  # blocks of one stream received but not yet written (8 MiB of 256 KiB leaves)
CAR_TYPE = "application/vnd.ipld.car"
BUSY_WAIT_S = 30.0  # waited in all for one busy provider (503) before the next is asked
BUSY_PAUSE_MAX_S = 5.0  # the longest pause between two tries, whatever Retry-After says


class PullError(ContentError):
    """No provider could give a block that a DAG needs."""


class _Busy(ContentError):
    """A provider answered 503: it has too many connections now."""

    def __init__(self, retry_after: float):
        super().__init__("busy (HTTP 503: too many connections)")
        self.retry_after = retry_after


def pull(store: ContentStore, cid: str, providers: Sequence[str], path: str = "") -> int:
    """Make every block of `ipfs://cid[/path]` present in `store`; return the bytes fetched.
    FileNotFoundError when the path is not in its directory; PullError when some block is
    on no provider (naming the CID and what each provider answered)."""
    root = unixfs.parse_cid(cid)
    names = [part for part in path.split("/") if part]
    fetched = 0
    target = _resolve_here(store, root, names)
    if target is None:  # a directory on the way is missing: the path's own blocks first
        fetched += _fetch(store, f"{cid}/{'/'.join(quote(n) for n in names)}", None, providers, "block")
        target = _resolve_here(store, root, names)
        if target is None:
            raise PullError(f"ipfs://{cid}/{'/'.join(names)}: the providers sent an incomplete path",
                            hint="a provider is faulty; try again, or another provider")
    missing = missing_roots(store, target)
    if len(missing) > PARALLEL_PULLS:  # mostly new here: one CAR of it all beats a request per file
        fetched += _fetch(store, unixfs.cid_to_str(target), target, providers, "all")
    elif len(missing) == 1:
        fetched += _fetch(store, unixfs.cid_to_str(missing[0]), missing[0], providers, "all")
    elif missing:
        with ThreadPoolExecutor(min(PARALLEL_PULLS, len(missing)), thread_name_prefix="bflow-pull") as pool:
            fetched += sum(pool.map(lambda c: _fetch(store, unixfs.cid_to_str(c), c, providers, "all"), missing))
    left = missing_roots(store, target)
    if left:
        raise PullError(f"block {unixfs.cid_to_str(left[0])} of {cid} is not on any provider "
                        f"({', '.join(providers) or 'none given'})")
    return fetched


def missing_roots(store: ContentStore, cid: bytes) -> list[bytes]:
    """The CIDs under `cid` (itself included) whose blocks are absent, none under another:
    each names one subtree to fetch. Only directory and file nodes present are read."""
    return [block for block, held in store.walk(unixfs.cid_to_str(cid)) if not held]


def _resolve_here(store: ContentStore, root: bytes, names: list[str]) -> bytes | None:
    """The CID at `root/names...` from blocks already here; None when one on the way is missing."""
    if not names:
        return root
    try:
        return dag.resolve(store, "/".join([unixfs.cid_to_str(root), *names]))[-1]
    except BlockNotFound:
        return None


def _fetch(store: ContentStore, ipfs_path: str, root: bytes | None, providers: Sequence[str],
           scope: str) -> int:
    """Fetch the CAR of `/ipfs/<ipfs_path>` from the first provider that serves it whole;
    return the bytes of the new blocks stored. `root`: the CID the CAR must be rooted at."""
    failures = []
    for provider in providers:
        try:
            return _fetch_patiently(store, provider, ipfs_path, root, scope)
        except FileNotFoundError:
            failures.append(f"{provider}: does not have it")
        except _Busy as e:
            failures.append(f"{provider}: {e}, still after {BUSY_WAIT_S:.0f} s")
        except ContentError as e:
            failures.append(f"{provider}: {e}")
            log.warning("pull: %s sent bad content for %s: %s", provider, ipfs_path, e)
        except (OSError, http.client.HTTPException) as e:
            failures.append(f"{provider}: cannot fetch ({type(e).__name__}: {e})".replace(": )", ")"))
    raise PullError(f"ipfs://{ipfs_path} could not be fetched from any provider: "
                    + ("; ".join(failures) or "no provider was given"),
                    hint="check that the providers' addresses are reachable from this machine "
                         "(`bflow node --advertise HOST`)")


def _fetch_patiently(store: ContentStore, provider: str, ipfs_path: str, root: bytes | None,
                     scope: str) -> int:
    """`_fetch_from`, asked again while the provider answers busy, for at most BUSY_WAIT_S."""
    give_up = time.monotonic() + BUSY_WAIT_S
    while True:
        try:
            return _fetch_from(store, provider, ipfs_path, root, scope)
        except _Busy as busy:
            pause = min(max(busy.retry_after, 0.1), BUSY_PAUSE_MAX_S)
            pause *= random.uniform(0.5, 1.5)  # the pullers turned away together do not come back together
            if time.monotonic() + pause > give_up:
                raise
            log.debug("pull: %s is busy; asking again in %.1f s", provider, pause)
            time.sleep(pause)


def _fetch_from(store: ContentStore, provider: str, ipfs_path: str, root: bytes | None, scope: str) -> int:
    parts = urlsplit(provider)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ContentError(f"not an http(s) gateway URL: {provider!r}")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=CONNECT_TIMEOUT_S)
    try:
        conn.connect()
        conn.sock.settimeout(READ_TIMEOUT_S)
        conn.request("GET", f"{parts.path.rstrip('/')}/ipfs/{ipfs_path}?format=car&dag-scope={scope}",
                     headers={"Accept": CAR_TYPE})
        response = conn.getresponse()
        if response.status == 404:
            raise FileNotFoundError(ipfs_path)
        if response.status == 503:
            raise _Busy(_seconds(response.getheader("Retry-After")))
        if response.status != 200:
            raise ContentError(f"answered HTTP {response.status} {response.reason}")
        return _store_all(store, read_car(response, root))
    finally:
        conn.close()


def _seconds(retry_after: str | None) -> float:
    """A Retry-After in seconds (1 when absent or a date; 0 for a negative or NaN one)."""
    try:
        return max(0.0, float(retry_after))
    except (TypeError, ValueError):
        return 1.0


def _store_all(store: ContentStore, blocks: Iterator[tuple[bytes, bytes]]) -> int:
    """Check and store the blocks as they arrive; return the bytes of those that were new.
    Hashing and writing run on WRITERS threads while this one reads the next block off the
    socket (one file per block: writing alone took as long as receiving, profiled), with at
    most IN_FLIGHT blocks held in memory. The first bad block raises ContentError."""
    pending: deque[Future] = deque()
    stored = 0

    def keep(cid: bytes, data: bytes) -> int:
        text = unixfs.cid_to_str(cid)
        if store.has(text):  # a block held already is neither checked nor written again
            return 0
        store.put_block(text, data)  # checks it against its CID: ContentError if not
        return len(data)

    with ThreadPoolExecutor(WRITERS, thread_name_prefix="bflow-pull-write") as pool:
        try:
            for cid, data in blocks:
                pending.append(pool.submit(keep, cid, data))
                while len(pending) >= IN_FLIGHT or (pending and pending[0].done()):
                    stored += pending.popleft().result()
            while pending:
                stored += pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
    return stored
