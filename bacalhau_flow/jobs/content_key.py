"""Content keys: what a shard's result depends on, as one hash (PRODUCT.md section 3).

A shard whose content key already succeeded in an earlier job of the same pipeline is not run
again under `reprocess: changed`: its result is reused (flow/job_run.py `plan_reuse`).

Decisions:

- The key covers, per datum and per mount: the input name, the datum path, and every file
  (path relative to the input root, and its content identity) and directory the mount holds.
  It does NOT cover the input url (the same bytes under another folder are the same input), nor
  the shard's index, the shard count or the job id: adding one file must rerun one shard, not
  every later one. A command that names its outputs after `$BFLOW_SHARD_INDEX` should use the
  stable `$BFLOW_SHARD_ID` instead, or `reprocess: always`.
- Content identity of a file:
  - local: its CID (storage/unixfs.py, as `ipfs add --cid-version 1 --raw-leaves`), cached in
    the job store by (path, size, mtime_ns, ctime_ns, inode), so unchanged files are not read
    again. As git does for its index, an entry whose mtime is within RACY_NS of the moment it
    was hashed is not trusted (the file may have changed again within one timestamp tick); it
    is hashed again, and cached for good once it is old enough.
  - ipfs://: the CID of the datum's path (a file's or a folder's), read from the DAG: from the
    local content store, or one gateway request; no file is fetched.
  - anything else (http, s3, memory, ...): what fsspec's `info` says without downloading:
    size plus a validator (ETag, Last-Modified, mtime, checksum, ...). A file without any
    validator has no trustworthy identity: the shard's key is None and it always runs.
- The transform: executor, cmd, env, stdin, entrypoint, fuel, the image name and, when a Docker
  engine answers here, the image id (a moved tag reruns); the wasm module's content (sha256 of
  a local file; the url of a remote one). `network` (a command with network access may see
  other data) and `resources.gpu` (GPU code paths give other numerics) are part of it;
  cpu, memory, disk, timeout and selector change speed or placement, not results, and are not.
- Any error while computing a key gives None for that shard (it runs), never a guessed key.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from typing import Any

from ..plan import Shard
from ..plan.combinators import leaves
from ..plan.datums import gc_paused
from ..plan.inputs import InputRoot, open_input
from ..storage.unixfs import file_cid
from .store import JobStore

KEY_VERSION = 1
RACY_NS = 2_000_000_000  # FAT and some network filesystems keep mtimes to 2 s
VALIDATORS = ("ETag", "etag", "Content-MD5", "md5", "checksum", "Digest", "Last-Modified", "LastModified",
              "last_modified", "mtime", "created", "VersionId", "generation", "CID", "cid")


def _digest(value: Any) -> str:
    body = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def transform_key(pipeline) -> str:
    """A hash of everything in the spec, besides the inputs, that changes a shard's result."""
    t = pipeline.transform
    module = t.resolved_module(pipeline.base_dir)
    return _digest({
        "v": KEY_VERSION, "executor": t.executor, "cmd": t.cmd, "env": t.env, "stdin": t.stdin,
        "entrypoint": t.entrypoint, "fuel": t.fuel, "image": t.image, "image_id": _image_id(t.image),
        "module": _module_identity(module), "network": pipeline.network, "gpu": pipeline.resources.gpu,
    })


def _image_id(image: str | None) -> str | None:
    """The local Docker engine's id of `image`, or None when no engine answers or it lacks the image."""
    if not image:
        return None
    try:
        from ..executors.docker import engine

        return engine().images.get(image).id
    except Exception:  # noqa: BLE001 - no engine, no image here, no docker SDK: the name alone
        return None


def _module_identity(module: str | None) -> str | None:
    if module is None or "://" in module:
        return module  # a remote module: its url (a changed module at the same url is not seen)
    try:
        with open(module, "rb") as f:
            return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return module  # the node will fail it; the key cannot be wrong about a shard that fails


class ContentKeys:
    """Computes the content keys of one pipeline's shards; local file CIDs go through the cache
    in `jobs` (the job store)."""

    def __init__(self, pipeline, jobs: JobStore):
        self.pipeline = pipeline
        self.jobs = jobs
        self.transform = transform_key(pipeline)
        self._roots: dict[str, InputRoot] = {}
        self._urls = {leaf.name: leaf.url for leaf in leaves(pipeline.input_tree())}
        self._cache: dict[str, dict[str, tuple]] = {}  # local root -> cached rows under it (`_file_cache`)
        self._fresh: list[tuple] = []  # new cache rows, written in one transaction by `keys`

    def keys(self, shards: list[Shard]) -> list[str | None]:
        """The content key of each shard, None for a shard whose inputs have no trustworthy identity."""
        try:
            with gc_paused():  # ~10 objects a datum, alive until the keys are hashed (plan/datums.py)
                return [self._key(shard) for shard in shards]
        finally:
            self.jobs.cache_file_cids(self._fresh)
            self._fresh = []

    def _key(self, shard: Shard) -> str | None:
        try:
            datums = [[self._mount(m.input, m.path) for m in datum.mounts] for datum in shard.datums]
        except _NoIdentity:
            return None
        except Exception:  # noqa: BLE001 - an input that cannot be read now: the shard runs (and says why)
            return None
        return "ck-" + _digest([KEY_VERSION, self.transform, datums])

    def _mount(self, name: str, path: str) -> list:
        root = self._root(name)
        if root.is_local:
            return [name, path, self._local(root, path)]
        if self._urls[name].startswith("ipfs://"):
            # The CID of the datum's own path, not the root's: a pipeline:// input is a new root
            # CID after every upstream change, but its unchanged parts keep their CIDs.
            return [name, path, root.fs.info(root.fs_path(path))["CID"]]
        dirs, files = root.subtree(path)
        return [name, path, sorted(dirs), [[f, _remote_identity(root, f)] for f in sorted(files)]]

    def _root(self, name: str) -> InputRoot:
        if name not in self._roots:
            self._roots[name] = open_input(self._urls[name])
        return self._roots[name]

    def _local(self, root: InputRoot, path: str) -> list:
        source = root.fs_path(path)
        st = os.stat(source)
        cache = self._file_cache(root)
        if not stat.S_ISDIR(st.st_mode):
            return [[path, self._local_cid(cache, source, st)]]
        dirs, files = root.subtree(path)
        return [sorted(dirs)] + [[f, self._local_cid(cache, root.fs_path(f), os.stat(root.fs_path(f)))]
                                 for f in sorted(files)]

    def _file_cache(self, root: InputRoot) -> dict[str, tuple]:
        """The cached CIDs under a local root, read once per job in one query."""
        cache = self._cache.get(root.root)
        if cache is None:
            top = root.root if not root.is_file else os.path.dirname(root.root)
            cache = self._cache[root.root] = self.jobs.file_cids_under(top)
        return cache

    def _local_cid(self, cache: dict[str, tuple], source: str, st: os.stat_result) -> str:
        hit = cache.get(source)
        if hit and hit[:4] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) \
                and st.st_mtime_ns < hit[5] - RACY_NS:
            return hit[4]
        now = time.time_ns()
        cid = file_cid(source)
        row = (source, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, cid, now)
        cache[source] = row[1:]
        self._fresh.append(row)
        return cid


class _NoIdentity(Exception):
    """A remote file whose listing gives no validator beyond its size."""


def _remote_identity(root: InputRoot, path: str) -> dict:
    info = root.fs.info(root.fs_path(path))
    seen = {k: info[k] for k in VALIDATORS if info.get(k) not in (None, "")}
    if not seen:
        raise _NoIdentity(path)
    seen["size"] = info.get("size")
    return seen
