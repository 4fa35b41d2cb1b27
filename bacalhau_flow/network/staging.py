"""A node stages a shard's inputs itself, with fsspec (ARCHITECTURE.md decision 7).

Each mount of each datum is copied to `inputs_dir/<input name>/<path as in the source>`.
An input url naming a single file acts as a directory holding just that file, so the
file's datum path is `/<basename>` (the same rule as planning).

Two steps, each spread over a small pool of threads (PARALLEL_FETCHES): first every datum
path is resolved to the files it holds (`InputRoot.subtree`: a directory datum is listed),
then every file is fetched (`InputRoot.fetch`). Both retry transient errors by the rule of
plan/retries.py (3 attempts over HTTP and memory://; s3fs and botocore retry S3 themselves).
The first failure stops the rest and becomes a StagingError naming the input and the path.
Staged files and folders are made read-only; directory symlinks in a local input are not
followed (as in planning), file symlinks are copied as files.

On a network reached by URL the request also names `providers`: gateways holding the blocks of
its `ipfs://` inputs (local inputs arrive that way: network/shipping.py). Then each datum's
blocks are first pulled into the node's content store (storage/pull.py: only what is missing,
every block checked), and staged from there.
"""

from __future__ import annotations

import os
import stat
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


def stage_inputs(request: ShardRequest, inputs_dir: Path, store: ContentStore | None = None) -> int:
    """Copy every datum of the shard under `inputs_dir`; return the bytes staged. `store`: the
    node's content store, where blocks from `request.providers` are pulled to.
    Raises StagingError naming the input and path that could not be fetched."""
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
    if store is not None and request.providers:
        pulled = [(name, path) for name, paths in wanted.items() for path in _outermost(paths)
                  if refs[name].url.startswith("ipfs://")]
        _all([(refs[name], path, lambda n=name, p=path: _pull(refs[n], p, store, request.providers,
                                                              _target(inputs_dir, n, p)))
              for name, path in pulled])
        staged = _size_of(inputs_dir)
        wanted = {name: paths for name, paths in wanted.items() if not refs[name].url.startswith("ipfs://")}
    datums = [(name, path) for name, paths in wanted.items() for path in paths]
    roots: dict[str, InputRoot] = {  # each input is resolved once per shard, not per datum
        name: _guarded(refs[name], "/", lambda url=refs[name].url: open_input(url))
        for name, paths in wanted.items() if paths
    }
    trees = _all([(refs[name], path, lambda n=name, p=path: roots[n].subtree(p)) for name, path in datums])
    files: dict[Path, tuple[str, str]] = {}  # target -> (input name, path); once each
    for (name, _), (dirs, paths) in zip(datums, trees):
        for d in dirs:
            _target(inputs_dir, name, d).mkdir(parents=True, exist_ok=True)
        for p in paths:
            files.setdefault(_target(inputs_dir, name, p), (name, p))
    for target in files:
        target.parent.mkdir(parents=True, exist_ok=True)
    sizes = _all([(refs[name], path, lambda t=target, n=name, p=path: roots[n].fetch(p, t))
                  for target, (name, path) in files.items()])
    _make_read_only(inputs_dir)
    return staged + sum(sizes)


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


def _all(steps: list[tuple[InputRef, str, Callable[[], T]]]) -> list[T]:
    """Run the steps, up to PARALLEL_FETCHES at a time; their results in order. The first
    failure cancels the steps not yet started and is raised (after the running ones end) as
    a StagingError. A single step runs in this thread: most shards hold one file, and a pool
    of threads per shard cost more than the copy."""
    if len(steps) <= 1:
        return [_guarded(ref, path, step) for ref, path, step in steps]
    with ThreadPoolExecutor(min(PARALLEL_FETCHES, len(steps)), thread_name_prefix="bflow-stage") as pool:
        futures: list[Future] = [pool.submit(_guarded, ref, path, step) for ref, path, step in steps]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
        if failed:
            wait([f for f in pending if not f.cancelled()])
            raise failed[0].exception()
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
