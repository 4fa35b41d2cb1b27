"""What a job leaves behind (PRODUCT.md section 5): merged outputs under the conflict
rule, streams concatenated in shard order, per-shard folders and a manifest.

Everything is read from the content store by CID; nothing here trusts a path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import OutputConflict
from ..storage import ContentStore, DagRef, import_file
from ..storage.store import ChunkReader
from ..storage.unixfs import build_directory
from .store import JobRecord, ShardRecord


def merge_outputs(content: ContentStore, shards: list[ShardRecord], conflict: str, scratch: Path | None = None) -> str:
    """Merge the outputs of completed shards, in shard order, into one tree; return its CID.

    Two shards writing one path: `error` raises OutputConflict naming the path and the
    shards; `concat` joins the files in shard order. A path that is a file in one shard and
    a folder in another is a conflict under either rule.

    The merged tree is built from the shards' DAGs as they are: a file one shard wrote is
    linked by its CID (its blocks are neither copied nor hashed again), and only the new
    directory nodes, and the files that `concat` joins, are made. The CID is the one
    `put_tree` of the merged folder would give (the same chunking, the same links), without
    writing that folder. `scratch` is no longer used (kept for callers that pass it).
    """
    owners: dict[str, list[tuple[int, DagRef]]] = {}
    for shard in shards:
        if shard.state in ("completed", "skipped") and shard.cid:
            for relpath, ref in content.file_refs(shard.cid):
                owners.setdefault(relpath, []).append((shard.index, ref))
    clashes = {path: ws for path, ws in owners.items() if len(ws) > 1}
    if clashes and conflict == "error":
        path, writers = sorted(clashes.items())[0]
        more = f" (and {len(clashes) - 1} more paths)" if len(clashes) > 1 else ""
        raise OutputConflict(
            f"shards {', '.join(str(i) for i, _ in writers)} all wrote /outputs/{path}{more}",
            hint="write shard-specific names (e.g. $BFLOW_OUTPUTS/$BFLOW_SHARD_ID.txt) or set "
                 "`output: {conflict: concat}` to join them in shard order",
        )
    files: dict[str, DagRef] = {}
    for relpath, writers in owners.items():
        if len(writers) == 1:
            files[relpath] = writers[0][1]
        else:  # concat: one new file, its chunks hashed as `put_tree` would hash them
            chunks = (chunk for _index, ref in writers for chunk in content.iter_file(ref.cid_str))
            files[relpath] = import_file(ChunkReader(chunks), content.sink)
    return build_tree(files, owners, content.sink).cid_str


def build_tree(files: dict[str, DagRef], owners: dict[str, list[tuple[int, DagRef]]], sink) -> DagRef:
    """The directory DAG holding `files` (relative path -> file DAG), every folder one flat
    UnixFS directory node, as `import_tree` builds them. A path that is a file and also a
    folder above another file raises OutputConflict naming both, with their shards."""
    tree: dict = {}
    for relpath in sorted(files):
        folder, parts = tree, relpath.split("/")
        for i, part in enumerate(parts[:-1]):
            below = folder.setdefault(part, {})
            if not isinstance(below, dict):
                _file_and_folder("/".join(parts[:i + 1]), relpath, owners)
            folder = below
        if isinstance(folder.get(parts[-1]), dict):  # sorted: cannot happen, kept for safety
            _file_and_folder(relpath, next(p for p in files if p.startswith(relpath + "/")), owners)
        folder[parts[-1]] = files[relpath]

    def build(folder: dict) -> DagRef:
        return build_directory([(os.fsencode(name), build(child) if isinstance(child, dict) else child)
                                for name, child in folder.items()], sink)

    return build(tree)


def _file_and_folder(file_path: str, inner: str, owners: dict[str, list[tuple[int, DagRef]]]) -> None:
    writers = sorted({i for i, _ in owners.get(file_path, [])} | {i for i, _ in owners.get(inner, [])})
    raise OutputConflict(
        f"shards {', '.join(str(i) for i in writers)} wrote /outputs/{file_path} both as a file and as a folder "
        f"(/outputs/{inner})",
        hint="write shard-specific names (e.g. use $BFLOW_SHARD_INDEX): a file and a folder cannot be merged",
    )


def stream(content: ContentStore, shards: list[ShardRecord], which: str) -> Iterator[bytes]:
    """Every shard's stdout or stderr (its last attempt), in shard order."""
    for shard in shards:
        cid = shard.stdout_cid if which == "stdout" else shard.stderr_cid
        if cid:
            yield from content.iter_file(cid)


def manifest(job: JobRecord) -> dict:
    return job.to_json()


RESULT_NAMES = ("stdout", "stderr", "outputs", "shards", "manifest.json")  # manifest.json last


def write_results(content: ContentStore, job: JobRecord, dest: Path) -> None:
    """Materialise a job under `dest` as PRODUCT.md section 5 lays out, verifying every
    block against its CID as it goes.

    Everything is written into a hidden folder inside `dest` first and renamed into place only
    when all of it verified, manifest.json last: a block that fails its CID (ContentError naming
    it) leaves `dest` as it was, never a half-written result that looks complete."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bflow-get-", dir=dest))
    try:
        _write_results(content, job, staging)
        (dest / "manifest.json").unlink(missing_ok=True)  # an older result stops looking complete first
        for name in RESULT_NAMES:
            target = dest / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif os.path.lexists(target):
                target.unlink()
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_results(content: ContentStore, job: JobRecord, dest: Path) -> None:
    (dest / "shards").mkdir()
    for which in ("stdout", "stderr"):
        with open(dest / which, "wb") as out:
            for chunk in stream(content, job.shards, which):
                out.write(chunk)
    outputs = dest / "outputs"
    if job.cid:
        content.export(job.cid, outputs)
    else:
        outputs.mkdir()
    for shard in job.shards:
        folder = dest / "shards" / str(shard.index)
        folder.mkdir(parents=True)
        for which, cid in (("stdout", shard.stdout_cid), ("stderr", shard.stderr_cid)):
            with open(folder / which, "wb") as out:
                if cid:
                    for chunk in content.iter_file(cid):
                        out.write(chunk)
        (folder / "exit_code").write_text("" if shard.exit_code is None else f"{shard.exit_code}\n")
        if shard.cid:
            content.export(shard.cid, folder / "outputs")
        else:
            (folder / "outputs").mkdir()
    (dest / "manifest.json").write_text(json.dumps(manifest(job), indent=2) + "\n")
