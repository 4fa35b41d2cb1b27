"""The work folders of a node's shard attempts, emptied and kept for the next attempt rather
than removed and made again.

An attempt works in `<work root>/<job id>/<shard>-<attempt>`: `inputs`, `outputs`, `home`,
`tmp` (executors/base.py SCRATCH_DIRS), `stdout` and `stderr`. Made afresh for each attempt,
that is six folders (with the input's own under `inputs`) and two files created and removed a
shard. On ext4 a file or folder created soon after many were removed costs the kernel a search
past each recently freed inode (`recently_deleted`), and with `discard` each freed folder block
is trimmed: for shards of `true` on the embedded network, a quarter of the node's time (1000
shards: 9.2 s of CPU, 7.1 s with the folders kept, 6.5 s with the work root on tmpfs).

So an ended attempt's folder is emptied down to that skeleton (what the command wrote beside
it, in its working folder, is removed too) and renamed into this process's spare folder
(`<work root>/.spare-<pid>/<n>`, at most KEEP of them); the next attempt renames a spare into
place. A folder is kept only when emptying it left the skeleton as first made: each part a
real folder or a regular file with no other name, owned by this process's user, the folders
empty with the modes they were made with, the files truncated. Anything else (a part replaced
by a symlink or a hard link, something that cannot be removed, another owner) and the whole
folder is removed, as before. Links are removed, never followed. Whatever the command started
has ended by then (its cgroup, its subreaper or its container is gone), so nothing writes there
while it is emptied. The spares are removed at this process's exit; those of a process that
could not (killed by SIGKILL) when another first takes a folder under that root.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import shutil
import stat
import threading
from pathlib import Path

from ..executors.base import SCRATCH_DIRS

log = logging.getLogger("bacalhau_flow.node")

FOLDERS = ("inputs", "outputs", *SCRATCH_DIRS)
FILES = ("stdout", "stderr")
KEEP = 64  # spare folders a process keeps per work root
SPARE_PREFIX = ".spare-"


class WorkFolders:
    """The work folders under one work root, for this process (a forked child gets its own)."""

    _by_root: dict[tuple[int, Path], "WorkFolders"] = {}
    _lock = threading.Lock()

    def __init__(self, root: Path):
        self.root = root
        self.spares = root / f"{SPARE_PREFIX}{os.getpid()}"
        self._spare: list[Path] = []
        self._count = itertools.count()
        self._lock = threading.Lock()
        self._spares_made = False
        self._modes: dict[str, int] = {}  # a part's mode as first made (under this process's umask)

    @classmethod
    def at(cls, root: Path) -> "WorkFolders":
        key = (os.getpid(), Path(root))
        with cls._lock:
            folders = cls._by_root.get(key)
            if folders is None:
                folders = cls._by_root[key] = cls(Path(root))
                _remove_stale_spares(folders.root)
                atexit.register(folders.clear)
            return folders

    def take(self, work: Path) -> None:
        """Make the empty work folder `work`: a spare, or a new one. What an earlier try of the
        same attempt left there (a node killed mid-attempt) is removed first."""
        try:
            left = os.lstat(work)
        except FileNotFoundError:
            left = None
        if left is not None and not stat.S_ISDIR(left.st_mode):  # a link (never followed), a file, a fifo
            os.unlink(work)
        elif left is not None:
            _remove_folder(work)
        with self._lock:
            spare = self._spare.pop() if self._spare else None
        if spare is not None:
            try:
                _in_job_folder(work, lambda: os.rename(spare, work))
                return
            except OSError:
                shutil.rmtree(spare, ignore_errors=True)
        _in_job_folder(work, work.mkdir)
        for name in FOLDERS:
            (work / name).mkdir()
        for name in FILES:
            (work / name).touch()
        if not self._modes:
            self._modes = {name: stat.S_IMODE(os.lstat(work / name).st_mode) for name in ("", *FOLDERS)}

    def give_back(self, work: Path) -> None:
        """The attempt in `work` has ended: keep the folder emptied, or remove it."""
        with self._lock:
            room = len(self._spare) < KEEP and bool(self._modes)
            spare = self.spares / str(next(self._count)) if room else None
        if spare is not None and _emptied(work, self._modes):
            try:
                if not self._spares_made:
                    self.spares.mkdir(exist_ok=True)
                    self._spares_made = True
                os.rename(work, spare)
                with self._lock:
                    self._spare.append(spare)
                return
            except OSError:
                pass
        _remove_folder(work)

    def clear(self) -> None:
        """Remove this process's spare folders (at its exit)."""
        with self._lock:
            self._spare.clear()
            self._spares_made = False
        shutil.rmtree(self.spares, ignore_errors=True)


def _remove_folder(work: Path) -> None:
    """Remove a whole work folder, read-only parts and links in it included, as far as it can."""
    try:
        _remove(str(work), True)
    except OSError:  # a path past the kernel's length limit, or not a folder: by descriptors
        try:
            shutil.rmtree(work, ignore_errors=True)
        except RecursionError:
            log.warning("work folder %s is too deep to remove; left in place", work)


def _in_job_folder(work: Path, make) -> None:
    """`make()` the folder `work`, and its job's folder first if that is missing: tried first,
    since the job's folder is there for all but its first shard."""
    try:
        make()
    except FileNotFoundError:
        work.parent.mkdir(parents=True, exist_ok=True)
        make()


def _emptied(work: Path, modes: dict[str, int]) -> bool:
    """Empty `work` down to its skeleton (FOLDERS, FILES), each part as first made; False when
    it cannot be (then the caller removes it all)."""
    me = os.geteuid()
    try:
        top = os.lstat(work)
        if not stat.S_ISDIR(top.st_mode) or top.st_uid != me:
            return False
        _set_mode(work, top.st_mode, modes[""])
        with os.scandir(work) as entries:
            parts = {entry.name: entry for entry in entries}
        if not {*FOLDERS, *FILES} <= set(parts):
            return False
        for name, entry in parts.items():  # what the command wrote beside them (its cwd is `work`)
            if name not in FOLDERS and name not in FILES:
                _remove(entry.path, entry.is_dir(follow_symlinks=False))
        for name in FOLDERS:
            info = parts[name].stat(follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != me:
                return False
            mode = info.st_mode
            if mode & 0o700 != 0o700:  # to empty it, whatever the command (or staging) left
                mode = _set_mode(parts[name].path, mode, 0o700)
            _remove_contents(parts[name].path)
            _set_mode(parts[name].path, mode, modes[name])
        for name in FILES:
            if not _truncated(parts[name], me):
                return False
        return True
    except (OSError, KeyError):
        return False


def _set_mode(path: str | Path, mode: int, wanted: int) -> int:
    """chmod `path` (now `mode`) to `wanted` unless it has it already; return `wanted`."""
    if stat.S_IMODE(mode) != wanted:
        os.chmod(path, wanted)
    return wanted


def _remove_contents(folder: str) -> None:
    with os.scandir(folder) as entries:
        found = [(entry.path, entry.is_dir(follow_symlinks=False)) for entry in entries]
    for path, is_dir in found:
        _remove(path, is_dir)


def _remove(path: str, is_dir: bool) -> None:
    """Remove a file, a link (never what it leads to) or a whole folder, read-only ones too;
    raises OSError when something cannot be removed (then the caller removes it all).

    Nothing writes there any more (the module docstring), so each folder is listed once and
    its entries removed by name, without shutil.rmtree's guards against a tree that changes
    while it is removed: a staged input, the usual case, took 20 system calls that way beside 8
    (each hands the GIL to another thread). Iterative, so no depth is too deep."""
    if not is_dir:
        os.unlink(path)
        return
    folders, pending = [], [path]
    while pending:
        folder = pending.pop()
        os.chmod(folder, 0o700)  # staged inputs are read-only
        folders.append(folder)
        with os.scandir(folder) as entries:
            found = [(entry.path, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for inner, inner_is_dir in found:
            if inner_is_dir:
                pending.append(inner)
            else:
                os.unlink(inner)
    for folder in reversed(folders):  # each after every folder below it
        os.rmdir(folder)


def _truncated(entry: os.DirEntry, me: int) -> bool:
    """Truncate the file `entry` if it is a regular file of ours with no other name (a hard
    link the command made to some other file must not be truncated)."""
    info = entry.stat(follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != me:
        return False  # never open a fifo or a device the command made either
    if info.st_size == 0:
        return True
    fd = os.open(entry.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != me:
            return False
        os.ftruncate(fd, 0)
        return True
    finally:
        os.close(fd)


def _remove_stale_spares(root: Path) -> None:
    """Remove the spare folders of processes that are gone (a node killed by SIGKILL)."""
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(SPARE_PREFIX)]
    except OSError:
        return
    for path in candidates:
        try:
            os.kill(int(path.name[len(SPARE_PREFIX):]), 0)
            continue  # alive
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, PermissionError):
            continue
