"""A node stages a shard's inputs itself, with fsspec (ARCHITECTURE.md decision 7).

Each mount of each datum is copied to `inputs_dir/<input name>/<path as in the source>`.
An input url naming a single file acts as a directory holding just that file, so the
file's datum path is `/<basename>` (the same rule as planning).

Two steps, each spread over a small pool of threads (PARALLEL_FETCHES): first every datum
path is resolved to the files it holds (`InputRoot.subtree`: a directory datum is listed),
then every file is fetched (`InputRoot.fetch`). Local files are staged in the calling thread
instead, one shard at a time per process (`_LOCAL_STAGING`), each copy created read-only. Both retry transient errors by the rule of
plan/retries.py (3 attempts over HTTP and memory://; s3fs and botocore retry S3 themselves).
The first failure stops the rest and becomes a StagingError naming the input and the path.
Staged files and folders are made read-only; directory symlinks in a local input are not
followed (as in planning), file symlinks are copied as files.

On a network reached by URL the request also names `providers`: gateways holding the blocks of
its `ipfs://` inputs (local inputs arrive that way: network/shipping.py). Then each datum's
blocks are first pulled into the node's content store (storage/pull.py: only what is missing,
every block checked), and staged from there.

A node that serves others (`bflow node`) reads local paths (a path or `file://`, also inside a
chained url such as `zip://...::file://...`) only inside the folders its operator allows
(`allow_paths`, `bflow node --allow-path DIR`; none given: no local path at all), each file's
real path checked, so a file symlink cannot lead out; and it never opens the fsspec protocols
that read local files by other names (reference://, git://, dir://). Remote requesters do not
need local paths: they ship local inputs as ipfs:// content. The embedded network, Devstack and
`bflow devstack` (the user's own machine) read local paths without restriction (None).
"""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, TypeVar

from ..errors import BflowError, StagingError
from ..plan.inputs import InputRoot, open_input
from ..storage import ContentStore, dag, unixfs
from ..storage.pull import pull
from .messages import InputRef, ShardRequest

T = TypeVar("T")

PARALLEL_FETCHES = 8  # files of one shard fetched at the same time
# Local files are staged by one shard at a time in a process: each copy is a few system calls,
# each of which hands the GIL over; sixty shards copying at once spent more time passing it
# around than copying (issue 13: ~100 futex calls per file). The kernel does the copy itself.
_LOCAL_STAGING = threading.Lock()
LOCAL_PROTOCOLS = (None, "file", "local")
LOCAL_READERS = ("reference", "git", "dir")  # fsspec protocols that read local files by other names
ALLOW_HINT = ("start the node with `bflow node --allow-path DIR` to let shards read local files under DIR, "
              "or send the data as content: `bflow run --network URL` ships local inputs as ipfs:// itself, "
              "`bflow add PATH` prints an ipfs://CID to use")


def stage_inputs(request: ShardRequest, inputs_dir: Path, store: ContentStore | None = None, *,
                 allow_paths: list[Path] | None = None) -> int:
    """Copy every datum of the shard under `inputs_dir`; return the bytes staged. `store`: the
    node's content store, where blocks from `request.providers` are pulled to. `allow_paths`:
    the only folders local inputs may be read from (None: anywhere; []: nowhere).
    Raises StagingError naming the input and path that could not be fetched or is refused."""
    refs = {ref.name: ref for ref in request.inputs}
    wanted: dict[str, dict[str, None]] = {ref.name: {} for ref in request.inputs}  # name -> datum paths
    for datum in request.datums:
        for name, paths in datum.items():
            if name not in refs:
                raise StagingError(f"a datum names input {name!r}, which the shard request does not define",
                                   retryable=False)
            wanted[name].update((_checked(name, p), None) for p in paths)
    for name in wanted:
        (inputs_dir / name).mkdir(parents=True, exist_ok=True)
    staged = 0
    pulling = store is not None and bool(request.providers)
    if pulling:
        pulled = [(name, path) for name, paths in wanted.items() for path in _outermost(paths)
                  if refs[name].url.startswith("ipfs://")]
        _all([(refs[name], path, lambda n=name, p=path: _pull(refs[n], p, store, request.providers,
                                                              _target(inputs_dir, n, p)))
              for name, path in pulled])
        staged = _size_of(inputs_dir)
        wanted = {name: paths for name, paths in wanted.items() if not refs[name].url.startswith("ipfs://")}
    datums = [(name, path) for name, paths in wanted.items() for path in paths]
    if allow_paths is not None:
        for name, paths in wanted.items():
            if paths:
                _check_allowed(refs[name], allow_paths)
    roots: dict[str, InputRoot] = {  # each input is resolved once per shard, not per datum
        name: _guarded(refs[name], "/", lambda url=refs[name].url: open_input(url))
        for name, paths in wanted.items() if paths
    }
    # Local files are staged in this thread: a pool of threads per shard cost more than the
    # copies themselves, and the kernel does the copying (issue 13: staging was most of a shard)
    local = all(root.is_local for root in roots.values())
    trees = _all([(refs[name], path, lambda n=name, p=path: roots[n].subtree(p)) for name, path in datums],
                 in_thread=local)
    files: dict[str, tuple[str, str]] = {}  # target -> (input name, path); once each
    base = os.fspath(inputs_dir)  # str paths: pathlib cost more than the copies of small files
    folders = {base, *(f"{base}/{name}" for name in wanted)}  # every folder made under inputs_dir
    for (name, _), (dirs, paths) in zip(datums, trees):
        for d in dirs:
            folders.add(_made(_target_str(base, name, d)))
        for p in paths:
            files.setdefault(_target_str(base, name, p), (name, p))
    for parent in {os.path.dirname(target) for target in files} - folders:
        folders.add(_made(parent))
    if allow_paths is not None:  # a file symlink under an allowed folder must not lead out of them
        for name, path in files.values():
            if roots[name].is_local:
                _check_allowed_path(refs[name], os.path.realpath(roots[name].fs_path(path)), allow_paths)
    sizes = _all([(refs[name], path, lambda t=target, n=name, p=path: roots[n].fetch(p, t, read_only=True))
                  for target, (name, path) in files.items()], in_thread=local)
    # fetched files are read-only already; pulled ones (exported from the store) are not
    if pulling:
        _make_read_only(inputs_dir)
    else:  # the folders made here, deepest first: no walk of what was just made
        for folder in sorted(_with_parents(folders, base), key=len, reverse=True):
            os.chmod(folder, 0o555)
    return staged + sum(sizes)


def _made(folder: str) -> str:
    """Make `folder` (and its parents); return it."""
    os.makedirs(folder, exist_ok=True)
    return folder


def _with_parents(folders: set[str], base: str) -> set[str]:
    """`folders` and every folder between each of them and `base` (the parents makedirs made)."""
    every = set(folders)
    for folder in folders:
        while folder != base and folder.startswith(base + "/"):
            folder = os.path.dirname(folder)
            if folder in every:
                break
            every.add(folder)
    return every


def _check_allowed(ref: InputRef, allow_paths: list[Path]) -> None:
    """Refuse an input url that reads this machine's files outside `allow_paths`."""
    from fsspec.core import split_protocol
    from fsspec.implementations.local import LocalFileSystem

    parts = ref.url.split("::")  # a chained url: every link of it
    for i, part in enumerate(parts):
        protocol = part if i < len(parts) - 1 and "://" not in part else split_protocol(part)[0]
        if protocol in LOCAL_READERS:
            raise StagingError(f"input {ref.name!r}: this node does not open {protocol}:// urls ({ref.url}): "
                               "they read its local files", hint=ALLOW_HINT, retryable=False)
        if protocol in LOCAL_PROTOCOLS:
            _check_allowed_path(ref, os.path.realpath(LocalFileSystem._strip_protocol(part)), allow_paths)


def _check_allowed_path(ref: InputRef, real: str, allow_paths: list[Path]) -> None:
    for folder in allow_paths:
        root = os.path.realpath(folder)
        if real == root or real.startswith(root.rstrip("/") + "/"):
            return
    if allow_paths:
        why = f"it is outside the folders this node may read (--allow-path {', '.join(map(str, allow_paths))})"
    else:
        why = "this node was started without --allow-path, so it reads no local path"
    raise StagingError(f"input {ref.name!r}: local path {real} ({ref.url}) refused: {why}",
                       hint=ALLOW_HINT, retryable=False)


def _pull(ref: InputRef, path: str, store: ContentStore, providers: list[str], target: Path) -> None:
    """Pull the blocks of one datum of an `ipfs://CID[/sub]` input into the node's store, then
    write the datum out from there to `target`."""
    cid, _, sub = ref.url[len("ipfs://"):].partition("/")
    where = "/".join(p for p in (sub, path.lstrip("/")) if p)
    try:
        pull(store, cid, providers, where)
        found = dag.resolve(store, f"{cid}/{where}")[-1]
    except FileNotFoundError:
        raise StagingError(f"cannot stage input {ref.name!r} path {path}: not in {ref.url}",
                           retryable=False) from None
    store.export(unixfs.cid_to_str(found), target)


def _outermost(paths: dict[str, None]) -> list[str]:
    """The datum paths not under another one (a datum `/a` already holds `/a/b`)."""
    ordered = sorted(paths)
    kept: list[str] = []
    for p in ordered:
        if not any(p == k or k == "/" or p.startswith(k + "/") for k in kept):
            kept.append(p)
    return kept


def _size_of(root: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(root):
        total += sum(os.lstat(os.path.join(dirpath, n)).st_size for n in names)
    return total


def _checked(name: str, path: str) -> str:
    """A datum path as planning makes them: `/` or `/a/b`, never reaching out of its input."""
    if path != "/" and (not path.startswith("/") or any(p in ("", ".", "..") for p in path[1:].split("/"))):
        raise StagingError(f"cannot stage input {name!r} path {path!r}: not a path under the input",
                           retryable=False)
    return path


def _target(inputs_dir: Path, name: str, path: str) -> Path:
    rel = _checked(name, path).lstrip("/")
    return inputs_dir / name / rel if rel else inputs_dir / name


def _target_str(inputs_dir: str, name: str, path: str) -> str:
    """`_target` as a str."""
    rel = _checked(name, path).lstrip("/")
    return f"{inputs_dir}/{name}/{rel}" if rel else f"{inputs_dir}/{name}"


def _all(steps: list[tuple[InputRef, str, Callable[[], T]]], in_thread: bool = False) -> list[T]:
    """Run the steps, up to PARALLEL_FETCHES at a time; their results in order. A failure
    cancels the steps not yet started; once the running ones end, the first failure in the
    steps' order is raised as a StagingError (the same error for the same shard every time). A single step runs in this thread: most shards hold one file, and a pool
    of threads per shard cost more than the copy; so do local files (`in_thread`)."""
    if in_thread:
        with _LOCAL_STAGING:
            return [_guarded(ref, path, step) for ref, path, step in steps]
    if len(steps) <= 1:
        return [_guarded(ref, path, step) for ref, path, step in steps]
    with ThreadPoolExecutor(min(PARALLEL_FETCHES, len(steps)), thread_name_prefix="bflow-stage") as pool:
        futures: list[Future] = [pool.submit(_guarded, ref, path, step) for ref, path, step in steps]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        if any(f.done() and not f.cancelled() and f.exception() is not None for f in futures):
            wait([f for f in pending if not f.cancelled()])
            # the first failure in the shard's own order, not whichever thread failed first
            raise next(f.exception() for f in futures if not f.cancelled() and f.exception() is not None)
        return [f.result() for f in futures]


def _guarded(ref: InputRef, path: str, step: Callable[[], T]) -> T:
    """Run one staging step; any failure becomes a StagingError naming the input and path."""
    try:
        return step()
    except StagingError:
        raise
    except BflowError as e:
        raise StagingError(f"cannot stage input {ref.name!r} path {path}: {e}", hint=e.hint,
                           retryable=e.retryable) from e
    except Exception as e:  # fsspec backends raise many kinds; name the input and path
        raise StagingError(f"cannot stage input {ref.name!r} path {path} from {ref.url}: {e}") from e


def _make_read_only(root: Path) -> None:
    """Files and folders under `root` read-only; symlinks are left alone."""
    for dirpath, dirs, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.chmod(p, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    for dirpath, dirs, _ in os.walk(root, topdown=False):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o555)
    os.chmod(root, 0o555)


def make_writable(root: Path) -> None:
    """Undo `_make_read_only` so a work directory can be removed."""
    if not root.exists():
        return
    os.chmod(root, 0o755)
    for dirpath, dirs, names in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o755)
