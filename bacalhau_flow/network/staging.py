"""A node stages a shard's inputs itself, with fsspec (ARCHITECTURE.md decision 7).

Each mount of each datum is copied to `inputs_dir/<input name>/<path as in the source>`.
An input url naming a single file acts as a directory holding just that file, so the
file's datum path is `/<basename>` (the same rule as planning).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from ..errors import BflowError, StagingError
from ..plan.inputs import InputRoot, open_input
from .messages import InputRef, ShardRequest


def stage_inputs(request: ShardRequest, inputs_dir: Path) -> int:
    """Copy every datum of the shard under `inputs_dir`; return the bytes staged.
    Raises StagingError naming the input and path that could not be fetched."""
    refs = {ref.name: ref for ref in request.inputs}
    roots: dict[str, InputRoot] = {}  # each input is resolved once per shard, not per datum
    staged = 0
    for ref in request.inputs:
        (inputs_dir / ref.name).mkdir(parents=True, exist_ok=True)
    for datum in request.datums:
        for name, paths in datum.items():
            for path in paths:
                if name not in roots:
                    roots[name] = _guarded(refs[name], path, lambda: open_input(refs[name].url))
                root = roots[name]
                staged += _guarded(refs[name], path, lambda: _stage_one(root, path, inputs_dir / name))
    _make_read_only(inputs_dir)
    return staged


def _guarded(ref: InputRef, path: str, step):
    """Run one staging step; any failure becomes a StagingError naming the input and path."""
    try:
        return step()
    except BflowError as e:
        raise StagingError(f"cannot stage input {ref.name!r} path {path}: {e}", hint=e.hint) from e
    except Exception as e:  # fsspec backends raise many kinds; name the input and path
        raise StagingError(f"cannot stage input {ref.name!r} path {path} from {ref.url}: {e}") from e


def _stage_one(root: InputRoot, path: str, dest_root: Path) -> int:
    source = root.fs_path(path)
    if root.is_file:
        target = dest_root / root.walk()[0].path.lstrip("/")
    else:
        target = dest_root / path.lstrip("/") if path != "/" else dest_root
    if root.is_local:
        return _copy_local(Path(source), target)
    fs = root.fs
    if fs.isdir(source):
        fs.get(source.rstrip("/") + "/", str(target) + "/", recursive=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get(source, str(target))
    return sum(f.stat().st_size for f in _files(target))


def _copy_local(source: Path, target: Path) -> int:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        return sum(f.stat().st_size for f in _files(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target.stat().st_size


def _files(path: Path):
    if path.is_file():
        yield path
        return
    for dirpath, _, names in os.walk(path):
        for n in names:
            p = Path(dirpath, n)
            if not p.is_symlink():
                yield p


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
