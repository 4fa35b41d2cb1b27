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
from ..storage import ContentStore
from .store import JobRecord, ShardRecord


def merge_outputs(content: ContentStore, shards: list[ShardRecord], conflict: str, scratch: Path) -> str:
    """Merge the outputs of completed shards, in shard order, into one tree; return its CID.

    Two shards writing one path: `error` raises OutputConflict naming the path and the
    shards; `concat` joins the files in shard order.
    """
    owners: dict[str, list[tuple[int, str]]] = {}
    for shard in shards:
        if shard.state in ("completed", "skipped") and shard.cid:
            for relpath, file_cid, _size in content.iter_files(shard.cid):
                owners.setdefault(relpath, []).append((shard.index, file_cid))
    clashes = {path: ws for path, ws in owners.items() if len(ws) > 1}
    if clashes and conflict == "error":
        path, writers = sorted(clashes.items())[0]
        more = f" (and {len(clashes) - 1} more paths)" if len(clashes) > 1 else ""
        raise OutputConflict(
            f"shards {', '.join(str(i) for i, _ in writers)} all wrote /outputs/{path}{more}",
            hint="write shard-specific names (e.g. use $BFLOW_SHARD_INDEX) or set `output: {conflict: concat}`",
        )
    scratch.mkdir(parents=True, exist_ok=True)
    tree = Path(tempfile.mkdtemp(prefix="merge-", dir=scratch))
    try:
        for relpath, writers in owners.items():
            target = tree / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                for _index, file_cid in writers:
                    for chunk in content.iter_file(file_cid):
                        out.write(chunk)
        return content.put_tree(tree)
    finally:
        shutil.rmtree(tree, ignore_errors=True)


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
