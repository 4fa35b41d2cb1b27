"""Datums and shards: what planning produces and every other part consumes.

A `Datum` is the unit of data a command sees at once: for a single input it mounts one
path (a file, or a directory with its whole subtree) of that input. A `Shard` is
`batch_size` consecutive datums, the unit that is dispatched, retried and cached.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, repeat
from typing import Iterable, NamedTuple

# Mount and Datum are tuples, not dataclasses: planning makes one per file (100,000 and more),
# and tuples are created and sorted several times faster.


class Mount(NamedTuple):
    """One path of one input, relative to the input root, `/`-separated, starting with `/`."""

    input: str
    path: str


class Datum(tuple):
    """What one command sees at once: one or more mounts (one per input for a single input).

    `Datum(mounts)` from Mounts; `.mounts` gives them back. Stored flat, as (input, path,
    input, path, ...): a single input's datum is then one tuple of two strings, which is one
    object to make and one that the cyclic collector stops tracking at its first look, where
    a tuple of Mount tuples was three (issue 13: planning 10^5 files). It compares, sorts and
    hashes as its mounts do, since every mount is two strings.
    """

    __slots__ = ()

    def __new__(cls, mounts: Iterable[Mount]) -> "Datum":
        return tuple.__new__(cls, chain.from_iterable(mounts))

    @classmethod
    def single(cls, input_name: str, path: str) -> "Datum":
        return tuple.__new__(cls, (input_name, path))

    @property
    def mounts(self) -> tuple[Mount, ...]:
        pairs = iter(self)
        return tuple(map(tuple.__new__, repeat(Mount), zip(pairs, pairs)))

    def __getnewargs__(self) -> tuple:  # copy and pickle: rebuilt from its mounts
        return (self.mounts,)

    def __repr__(self) -> str:
        return f"Datum({self.mounts!r})"

    def to_json(self) -> dict[str, list[str]]:
        """`{"<input name>": ["/path", ...]}` as `bflow plan --json` prints it."""
        if len(self) == 2:  # a single input's datum: most datums, made once per datum
            name, path = self
            return {name: [path]}
        out: dict[str, list[str]] = {}
        for m in self.mounts:
            out.setdefault(m.input, []).append(m.path)
        return out

    @classmethod
    def from_json(cls, data: dict[str, list[str]]) -> "Datum":
        return tuple.__new__(cls, (x for name, paths in data.items() for p in paths for x in (name, p)))


@dataclass(frozen=True)
class Shard:
    pipeline: str
    index: int
    datums: tuple[Datum, ...]

    @cached_property
    def id(self) -> str:
        """Stable across runs: derived from the pipeline, input names and datum paths only.
        Computed once (a hash of all its datum paths, asked for at every step of a job)."""
        return _id_of(self.pipeline, self.datums_json)

    @cached_property
    def datums_json(self) -> list[dict[str, list[str]]]:
        """`[d.to_json() for d in datums]`, made once: what requests and the job store carry.
        Treat it as read-only. Built with the cyclic collector paused, as planning builds its
        datums (plan/datums.py `gc_paused`): these dicts and lists live as long as the job."""
        from .datums import gc_paused

        with gc_paused():
            return [d.to_json() for d in self.datums]

    def to_json(self) -> dict:
        return {"index": self.index, "id": self.id, "datums": [d.to_json() for d in self.datums]}


def shard_id(pipeline: str, datums: tuple[Datum, ...]) -> str:
    return _id_of(pipeline, [d.to_json() for d in datums])


def _id_of(pipeline: str, datums_json: list[dict[str, list[str]]]) -> str:
    body = json.dumps([pipeline, datums_json], separators=(",", ":"), sort_keys=True)
    return "sh-" + hashlib.sha256(body.encode()).hexdigest()[:16]


def cut_into_shards(pipeline: str, datums: list[Datum], batch_size: int, *,
                    keep_order: bool = False) -> list[Shard]:
    """Sort datums by path and cut them into shards of `batch_size` consecutive datums.

    `keep_order`: the datums are already in their planned order (input combinators order
    them by spec and key, see `plan_input_tree`); cut them as they come."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    ordered = list(datums) if keep_order else sorted(datums)
    return [
        Shard(pipeline, i, tuple(ordered[start : start + batch_size]))
        for i, start in enumerate(range(0, len(ordered), batch_size))
    ]
