"""Local inputs, listed and copied with as little per file as Python allows (issue 13): planning
lists 10^5 files, staging copies each shard's files, and both ran several times slower than
the bare system calls. `plan/inputs.py` (`InputRoot`) is their one user: `walk`, `list_paths`,
`subtree` and `fetch` of a local root.
"""

from __future__ import annotations

import errno
import os
import stat

from ..errors import InputUnreachable
from .retries import reason as _reason


def scan_local(url: str, root: str, *, with_sizes: bool) -> tuple[list[str], list[str], list[int]]:
    """(dirs, files, file sizes) by os.scandir: directory symlinks are neither followed nor
    listed; regular files and symlinks to them are files; the rest is skipped.
    File sizes cost a stat per file, so they are only read `with_sizes`.

    The files come sorted by path (as `sorted()` sorts the strings), at little more than the
    cost of the listing: each folder's names are sorted on their own (a folder as its name
    plus "/", which is how every path below it compares with its siblings), and the folders
    are walked in that order. Planning then sorts an already sorted list, which costs one pass
    instead of a sort of every path (issue 13). The folders come in the order walked, which is
    sorted too unless a folder's name is a sibling folder's name followed by a character
    before "/" (`a b` before `a`)."""
    dirs: list[str] = []
    files: list[str] = []
    sizes: list[int] = []
    # (a folder's path on disk, its relative path, None), or a run of sorted files: (None, paths, sizes)
    stack: list[tuple] = [(root, "", None)]
    while stack:
        directory, rel, run_sizes = stack.pop()
        if directory is None:
            files.extend(rel)
            if with_sizes:
                sizes.extend(run_sizes)
            continue
        if rel:
            dirs.append(rel)
        try:
            it = os.scandir(directory)
        except OSError as exc:
            raise InputUnreachable(f"{url}: cannot list {rel or '/'} ({_reason(exc)})",
                                   retryable=False) from None
        prefix = rel + "/"
        names: list[str] = []  # files here
        below: dict[str, str] = {}  # folder name + "/" -> its path on disk
        size_of: dict[str, int] = {}
        with it:
            entries = list(it)
        if not with_sizes:
            try:  # the common case in one comprehension: is_file() is True for regular files (no
                # stat where the kernel gives the type) and for links to files, the files we list
                names = [e.name for e in entries if e.is_file()]
            except OSError:
                names = []
            else:
                if len(names) == len(entries):
                    entries = []  # nothing else here
                else:
                    regular = set(names)
                    entries = [e for e in entries if e.name not in regular]
        if entries:
            for e in entries:
                try:
                    if e.is_file(follow_symlinks=False):  # the common case first
                        follow = False
                    elif e.is_dir(follow_symlinks=False):
                        below[e.name + "/"] = e.path
                        continue
                    elif e.is_symlink() and e.is_file():  # a link to a file: not a dir, not broken
                        follow = True
                    else:
                        continue
                    if with_sizes:
                        size_of[e.name] = e.stat(follow_symlinks=follow).st_size
                    names.append(e.name)
                except FileNotFoundError:
                    continue  # removed while we listed it
        if not below:  # a folder of files only: one run
            names.sort()
            files.extend(map(prefix.__add__, names))
            if with_sizes:
                sizes.extend(map(size_of.__getitem__, names))
            continue
        keys = names + list(below)
        keys.sort()
        pending: list[tuple] = []
        run: list[str] = []
        for key in keys + ["/"]:  # "/" (no name) ends the last run
            if key[-1] != "/":
                run.append(key)
                continue
            if run:
                pending.append((None, [prefix + n for n in run], [size_of[n] for n in run] if with_sizes else None))
                run = []
            if key != "/":
                pending.append((below[key], prefix + key[:-1], None))
        stack.extend(reversed(pending))
    return dirs, files, sizes


_COPY_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
_SENDFILE_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV)


def copy_file(source: str, target: str | os.PathLike, read_only: bool = False) -> int:
    """Copy one local file (a symlink to a file: its content) in the kernel where it can
    (sendfile); return the bytes copied. About half the system calls of `shutil.copyfile`,
    which staging paid per file (issue 13): no same-file check (the target is always new), no
    second stat for the size, the mode set on the open descriptor."""
    src = os.open(source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        if stat.S_ISDIR(os.fstat(src).st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", source)
        dst = os.open(target, _COPY_FLAGS, 0o644)
        try:
            copied = 0
            try:
                while n := os.sendfile(dst, src, None, 1 << 30):
                    copied += n
            except OSError as e:
                if e.errno not in _SENDFILE_UNSUPPORTED or copied:
                    raise
                while chunk := os.read(src, 1 << 20):  # a filesystem without sendfile
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(dst, view):]
                    copied += len(chunk)
            if read_only:
                os.fchmod(dst, 0o444)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return copied
