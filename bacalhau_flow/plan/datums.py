"""Datums of one input: glob + exclude over an input root (PRODUCT.md section 3).

- The glob is matched against every file and every directory under the root.
- A pattern that matches the root (`/`) gives one datum `/` holding the whole input; the
  root is not walked then.
- A matched file is a datum of that file; a matched directory is a datum of its whole subtree.
- A path inside an already matched directory is not a datum of its own: datums never overlap.
- `exclude` drops datums whose own path matches any exclude pattern (same glob rules, matched
  with the datum's kind: a directory datum is dropped by a pattern that matches that
  directory, e.g. `/drafts`, not by `/drafts/**`, which only ever matches files). It is
  applied after overlap removal: excluding a matched directory does not turn the paths
  inside it into datums of their own.
- The result is sorted by path. A glob that matches nothing gives [].
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Iterator, Sequence

from .datum import Datum
from .glob import GlobPattern, compile_glob
from .inputs import InputRoot

__all__ = ["MatchedDatum", "match_paths", "plan_datums", "plan_matches"]

# (path, is_dir, captures): what planning works with before it builds Datum objects
Hit = tuple[str, bool, tuple[str, ...]]
_PATH = itemgetter(0)


@dataclass(frozen=True)
class MatchedDatum:
    """A datum's path with what the glob's `( )` groups captured (for `join_on`, `group_by`)."""

    input: str
    path: str
    is_dir: bool
    captures: tuple[str, ...]

    @property
    def datum(self) -> Datum:
        return Datum.single(self.input, self.path)


def plan_datums(input_name: str, root: InputRoot, glob: str, exclude: Sequence[str] = ()) -> list[Datum]:
    """The datums of one input, sorted by path (section 3).

    A bad glob or exclude pattern raises ValueError; listing errors are PlanErrors.
    """
    with gc_paused():
        return single_datums(input_name, _datum_paths(root, glob, exclude))


def single_datums(input_name: str, paths: Sequence[str]) -> list[Datum]:
    """`[Datum.single(input_name, p) for p in paths]`, built by C-level calls only: a Python
    constructor called 10^5 times took longer than listing the files (issue 13)."""
    return list(map(tuple.__new__, repeat(Datum), zip(repeat(input_name), paths)))


def _datum_paths(root: InputRoot, glob: str, exclude: Sequence[str]) -> list[str]:
    """The datum paths of `_plan`, sorted. When they are all files and nothing is captured
    (the common case: `/**`, `/*.csv`), without its (path, kind, captures) tuples."""
    pattern = compile_glob(glob)
    excludes = [compile_glob(x) for x in exclude]
    if pattern.groups or pattern.match("/", True) is not None:
        return [path for path, _, _ in _plan(root, glob, exclude)]
    dirs, files = root.list_paths()
    if pattern.select(dirs, True):
        return [path for path, _, _ in _plan(root, glob, exclude, listing=(dirs, files))]
    paths = sorted(pattern.select(files, False))  # one pass: local listings come sorted
    for x in excludes:
        gone = set(x.select(paths, False))
        if gone:
            paths = [p for p in paths if p not in gone]
    return paths


def plan_matches(input_name: str, root: InputRoot, glob: str,
                 exclude: Sequence[str] = ()) -> list[MatchedDatum]:
    """Like `plan_datums`, with each datum's kind and capture groups."""
    with gc_paused():
        return [MatchedDatum(input_name, path, is_dir, caps) for path, is_dir, caps in _plan(root, glob, exclude)]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while planning builds ~10^5 objects that stay alive.

    Planning creates no reference cycles; without this the collector rescans the growing
    lists again and again, which made planning 100,000 files about 1.5x slower.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _plan(root: InputRoot, glob: str, exclude: Sequence[str],
          listing: tuple[Sequence[str], Sequence[str]] | None = None) -> list[Hit]:
    """`listing`: the root's `list_paths()`, when the caller has it already."""
    pattern = compile_glob(glob)
    excludes = [compile_glob(x) for x in exclude]
    root_captures = pattern.match("/", True)
    if root_captures is not None:
        hits: list[Hit] = [("/", True, root_captures)]
    else:
        dirs, files = listing or root.list_paths()
        hits = match_paths(pattern, dirs, files)
    for x in excludes:
        hits = _drop(hits, x)
    return hits


def match_paths(pattern: GlobPattern, dirs: Sequence[str], files: Sequence[str]) -> list[Hit]:
    """(path, is_dir, captures) of what the pattern matches, without overlap, sorted by path.

    `dirs` and `files` are paths under a root (never the root itself), as from
    `InputRoot.list_paths()`.
    """
    if pattern.groups == 0:  # the common case, kept to C-level filtering and string sorting
        matched_dirs = pattern.select(dirs, True)
        matched_files = pattern.select(files, False)
        if not matched_dirs:
            return [(p, False, ()) for p in sorted(matched_files)]
        outer = set(matched_dirs)
        matched_dirs = [p for p in matched_dirs if not _inside_any(p, outer)]
        matched_files = [p for p in matched_files if not _inside_any(p, outer)]
        kept = set(matched_dirs)
        return [(p, p in kept, ()) for p in sorted(matched_dirs + matched_files)]
    match = pattern.match
    dir_hits = [(p, True, c) for p in dirs if (c := match(p, True)) is not None]
    hits = dir_hits + [(p, False, c) for p in files if (c := match(p, False)) is not None]
    if dir_hits:
        outer = {h[0] for h in dir_hits}
        hits = [h for h in hits if not _inside_any(h[0], outer)]
    hits.sort(key=_PATH)
    return hits


def _drop(hits: list[Hit], exclude: GlobPattern) -> list[Hit]:
    """The hits whose path the exclude pattern does not match."""
    if hits and hits[0][0] == "/":  # the root datum (only ever alone)
        return [] if exclude.match("/", True) is not None else hits
    gone = set(exclude.select([h[0] for h in hits if h[1]], True))
    gone.update(exclude.select([h[0] for h in hits if not h[1]], False))
    return [h for h in hits if h[0] not in gone] if gone else hits


def _inside_any(path: str, dirs: set[str]) -> bool:
    """Whether a proper ancestor of `path` is in `dirs`."""
    end = path.rfind("/")
    while end > 0:
        if path[:end] in dirs:
            return True
        end = path.rfind("/", 0, end)
    return False
