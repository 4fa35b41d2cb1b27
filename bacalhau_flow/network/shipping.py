"""Local inputs for nodes on other machines: the requester ships them as content.

On a network reached by URL a node may not see the requester's disk. So before a shard goes
out, each of its local inputs (a path or `file://`) is put into the requester's content store
as a small UnixFS directory holding just that shard's datums, at their paths under the input
root, and the shard request names it `ipfs://CID` instead. The node pulls those blocks from the
requester's gateway (network/staging.py, storage/pull.py), verifying each, and stages them at
the same paths as before, so a command sees `$BFLOW_INPUTS/<name>/<datum path>` either way.

Only the shard's own files are shipped, and what the node holds already (an earlier shard's
copy of a file, say) is not fetched again. The datum paths are resolved as staging resolves
them (`InputRoot.subtree`: directory symlinks are not followed, file symlinks are copied as
files), and every file is read and hashed now, so the node gets the bytes that were there
when the shard was sent. The embedded network never ships: its nodes share the requester's
disk and read local paths directly.
"""

from __future__ import annotations

import os
from typing import Any

from fsspec.core import split_protocol

from ..errors import StagingError
from ..plan.inputs import open_input
from ..storage import ContentStore, unixfs
from .messages import InputRef, ShardRequest


def is_local(url: str) -> bool:
    return split_protocol(url)[0] in (None, "file", "local")


def ship_local_inputs(request: ShardRequest, store: ContentStore) -> ShardRequest:
    """The request with each local input replaced by `ipfs://CID` of the shard's files, which
    are now in `store`. Raises StagingError naming the input and path that cannot be read."""
    if not any(is_local(ref.url) for ref in request.inputs):
        return request
    inputs = [InputRef(name=ref.name, url=f"ipfs://{_ship(request, ref, store)}") if is_local(ref.url) else ref
              for ref in request.inputs]
    return request.model_copy(update={"inputs": inputs})


def _ship(request: ShardRequest, ref: InputRef, store: ContentStore) -> str:
    paths = dict.fromkeys(p for datum in request.datums for p in datum.get(ref.name, ()))
    try:
        root = open_input(ref.url)
        tree: dict[str, Any] = {}  # name -> subtree (dict) or file (DagRef)
        for path in paths:
            dirs, files = root.subtree(path)
            for d in dirs:
                _place(tree, d)
            for f in files:
                _place(tree, f, _add_file(root.fs_path(f), store))
        return _build(tree, store).cid_str
    except StagingError:
        raise
    except Exception as e:  # an input's file vanished or cannot be read: name it
        raise StagingError(f"cannot send input {ref.name!r} from {ref.url} to the node: {e}",
                           hint="the input changed or became unreadable after planning; run the job again",
                           retryable=False) from e


def _add_file(path: str, store: ContentStore) -> unixfs.DagRef:
    with open(path, "rb", buffering=0) as f:  # follows a file symlink, as staging copies it
        return unixfs.import_file(f, store.sink)


def _place(tree: dict, path: str, leaf: unixfs.DagRef | None = None) -> None:
    """Put a directory (leaf None) or a file at `path` ("/a/b") in the nested dict."""
    *parents, name = [p for p in path.split("/") if p] or [""]
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    if not name:  # the input root itself
        return
    if leaf is None:
        node.setdefault(name, {})
    else:
        node[name] = leaf


def _build(tree: dict, store: ContentStore) -> unixfs.DagRef:
    entries = [(os.fsencode(name), _build(child, store) if isinstance(child, dict) else child)
               for name, child in tree.items()]
    return unixfs.build_directory(entries, store.sink)
