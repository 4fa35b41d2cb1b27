"""Input combinators: datums of `cross`, `union`, `join` and `group` inputs (PRODUCT.md section 1).

An input tree is built from `Leaf` inputs (one url, glob and exclude each, as a single input)
and the combinators `Cross`, `Union`, `Join` and `Group`. `plan_input_tree` turns a tree into
datums; cutting them into shards stays with `cut_into_shards`.

Semantics (Pachyderm's, where this page says nothing else):

- leaf: the datums of its glob (section 3); each mounts one path of that input.
- union: the datums of every member, each unchanged (so each mounts only its own inputs).
- cross: the cartesian product of the members' datums; each datum holds the mounts of one
  datum of every member (a folder per input name).
- join: members are leaves, each with `join_on`, a key made of its glob's `( )` captures
  (`"$1"`, `"$1-$2"`, `"${1}x"`; `$$` is a literal `$`). For each key, the datum is the cross of
  the datums of every member with that key, so two files of one member with the same key give
  two datums. A key that some member lacks gives a datum (the cross of the members that have
  it) only when at least one member that has it says `outer_join: true`; otherwise it is
  dropped. So with no `outer_join` it is an inner join, with all members outer a full one.
- group: members are leaves, each with `group_by` (same key syntax). Every key gives one
  datum holding every datum of every member with that key: several paths of one input in
  one datum.
- cross and union may nest any node; join and group members are leaves, as in Pachyderm,
  where `join_on` and `group_by` belong to a single input.

Decisions:

- Input names are unique in the whole tree, not only within one combinator (Pachyderm lets
  union members share a name). A datum names its mounts by input name and a shard request
  maps each name to one url, so one name for two urls could not be staged.
- `join_on` and `outer_join` are only allowed on join members, `group_by` only on group
  members; a `$N` beyond the glob's groups is an error, found before anything is listed.
- Order, so shard ids are stable (`plan_input_tree` says it in full): the spec's order, a
  union's members one after another, a cross member by member, joins and groups by key
  (sorted as strings, as paths are); mounts inside a datum in spec order. This is not the
  order `cut_into_shards` sorts into (by input name, then path), so combinator datums must be
  cut as they come.
- A bad tree raises InputTreeError, a ValueError (as a bad glob is in `plan_datums`) naming
  the field (`input.join[1].join_on: ...`) and carrying it as `loc`, so the spec layer can
  point at the YAML line; listing errors are PlanErrors from `open_root`.

Nothing here lists files at import: the fsspec-backed listing is imported on first use, so the
spec layer can build trees cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, product
from typing import TYPE_CHECKING

from .datum import Datum, Mount
from .glob import compile_glob

if TYPE_CHECKING:  # pragma: no cover
    from .datums import MatchedDatum
    from .inputs import InputRoot

__all__ = ["Cross", "Group", "InputTreeError", "Join", "Leaf", "Node", "Union", "check_tree",
           "field_path", "key_of", "leaves", "plan_input_tree"]

Mounts = tuple[Mount, ...]  # one datum's mounts while it is being combined
Loc = tuple[str | int, ...]  # a field below the input: ("cross", 1, "name")


@dataclass(frozen=True)
class Leaf:
    """One input: what a single `input:` holds, plus the keys for joins and groups."""

    name: str
    url: str  # as `open_root` takes it: a local path already made absolute, memory://, ...
    glob: str = "/"
    exclude: tuple[str, ...] = ()
    join_on: str | None = None  # only on members of a Join
    outer_join: bool = False  # only on members of a Join
    group_by: str | None = None  # only on members of a Group

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", tuple(self.exclude))


@dataclass(frozen=True)
class _Combinator:
    inputs: tuple[Node, ...]  # any iterable is kept as a tuple
    keyword = ""  # the YAML key, for messages (a class attribute, not a field)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))


class Cross(_Combinator):
    """Every combination of one datum of each member."""

    keyword = "cross"


class Union(_Combinator):
    """The datums of every member, each as it is (mounting only that member's inputs)."""

    keyword = "union"


class Join(_Combinator):
    """Datums of members (leaves with `join_on`) whose keys are equal, crossed per key."""

    keyword = "join"


class Group(_Combinator):
    """One datum per `group_by` key, holding every member datum with that key."""

    keyword = "group"


Node = Leaf | Cross | Union | Join | Group
OpenRoot = Callable[[str], "InputRoot"]


# --- public functions --------------------------------------------------------------------------

def plan_input_tree(node: Node, open_root: OpenRoot | None = None) -> list[Datum]:
    """The datums of an input tree, in their planned order (cut them without re-sorting).

    The order, so that shard ids are stable: a leaf's datums by path; a union's members one
    after another, in spec order; a cross by its first member's order, then the next's; a
    join or group by key (as strings), then by the member datums' order. Inside a datum the
    mounts follow the tree's inputs in spec order (depth first), each input's paths sorted.

    `open_root(url)` opens each leaf's input (default: `plan.inputs.open_input`). A bad tree
    raises InputTreeError (a ValueError, see `check_tree`); listing errors are PlanErrors.
    """
    check_tree(node)
    if open_root is None:
        from .inputs import open_input as open_root
    if isinstance(node, Leaf):  # a single input: exactly `plan_datums`, already sorted by path
        from .datums import plan_datums

        return plan_datums(node.name, open_root(node.url), node.glob, node.exclude)
    from .datums import gc_paused  # planning builds ~10^5 long-lived objects: see there

    with gc_paused():
        return [Datum(mounts) for mounts in _combine(node, open_root)]


def leaves(node: Node) -> list[Leaf]:
    """The tree's leaves, depth first in spec order: the inputs a shard request names."""
    if isinstance(node, Leaf):
        return [node]
    return [leaf for member in node.inputs for leaf in leaves(member)]


def check_tree(node: Node) -> None:
    """Raise InputTreeError for a tree that cannot be planned, before anything is listed.

    Checks: combinators have members; join and group members are leaves carrying their key;
    keys are only where they apply and name existing capture groups; globs and excludes
    compile; input names are unique in the whole tree.
    """
    _check_node(node, (), parent=None)
    seen: dict[str, Loc] = {}
    for leaf, loc in _leaves_at(node, ()):
        if leaf.name in seen:
            raise InputTreeError(loc + ("name",), f"input name {leaf.name!r} is already used by "
                                 f"{field_path(seen[leaf.name])}; every input needs its own name "
                                 "(it is its folder under the inputs)")
        seen[leaf.name] = loc


class InputTreeError(ValueError):
    """A tree that cannot be planned. `loc` is the field below the input, as a spec error walks
    it (`("cross", 1, "name")`); `detail` the reason; `str()` both: `input.cross[1].name: ...`."""

    def __init__(self, loc: Loc, detail: str):
        super().__init__(f"{field_path(loc)}: {detail}")
        self.loc, self.detail = loc, detail


def field_path(loc: Loc, root: str = "input") -> str:
    """`("cross", 1, "name")` -> `input.cross[1].name`."""
    return root + "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in loc)


def key_of(template: str, captures: Sequence[str]) -> str:
    """A `join_on` / `group_by` key: `$N` and `${N}` replaced by capture group N (from 1).

    `$$` is a literal `$`. A `$` not followed by a group number, or a group the glob does not
    have, raises ValueError.
    """
    fmt, highest = _parse_key(template)
    if highest > len(captures):
        raise ValueError(f"key {template!r}: ${highest} names capture group {highest}, but the glob has "
                         f"{len(captures)} capture group(s)")
    return fmt.format(*captures)


_KEY_REF = re.compile(r"\$(?:(\d+)|\{(\d+)\}|\$)?")


def _parse_key(template: str) -> tuple[str, int]:
    """The template as a `str.format` string over the captures (`"$1-$2"` -> `"{0}-{1}"`), and
    the highest group it names. Parsed once per input: planning formats a key per datum."""
    out: list[str] = []
    highest, end = 0, 0
    for match in _KEY_REF.finditer(template):
        out.append(template[end:match.start()].replace("{", "{{").replace("}", "}}"))
        end = match.end()
        if match.group(0) == "$$":
            out.append("$")
            continue
        number = match.group(1) or match.group(2)
        if number is None:
            raise ValueError(f"key {template!r}: '$' must be followed by a group number "
                             "(e.g. $1 or ${1}); write $$ for a literal '$'")
        n = int(number)
        if n == 0:
            raise ValueError(f"key {template!r}: capture groups are numbered from 1")
        out.append(f"{{{n - 1}}}")
        highest = max(highest, n)
    out.append(template[end:].replace("{", "{{").replace("}", "}}"))
    return "".join(out), highest


# --- checking ------------------------------------------------------------------------------------

def _check_node(node: Node, loc: Loc, parent: _Combinator | None) -> None:
    if isinstance(node, Leaf):
        _check_leaf(node, loc, parent)
        return
    if not isinstance(node, _Combinator) or type(node) is _Combinator:
        raise InputTreeError(loc, f"expected a Leaf, Cross, Union, Join or Group, got {type(node).__name__}")
    if not node.inputs:
        raise InputTreeError(loc + (node.keyword,), "needs at least one input")
    for i, member in enumerate(node.inputs):
        at = loc + (node.keyword, i)
        if isinstance(node, (Join, Group)) and not isinstance(member, Leaf):
            key = "join_on" if isinstance(node, Join) else "group_by"
            raise InputTreeError(at, f"members of a {node.keyword} are single inputs (url, glob and "
                                     f"{key}), not a {getattr(member, 'keyword', type(member).__name__)}")
        _check_node(member, at, node)


def _check_leaf(leaf: Leaf, loc: Loc, parent: _Combinator | None) -> None:
    try:
        groups = compile_glob(leaf.glob).groups
    except ValueError as exc:
        raise InputTreeError(loc + ("glob",), str(exc)) from None
    for i, pattern in enumerate(leaf.exclude):
        try:
            compile_glob(pattern)
        except ValueError as exc:
            raise InputTreeError(loc + ("exclude", i), str(exc)) from None
    in_join, in_group = isinstance(parent, Join), isinstance(parent, Group)
    if not in_join and leaf.join_on is not None:
        raise InputTreeError(loc + ("join_on",), "only members of a join have a join_on")
    if not in_join and leaf.outer_join:
        raise InputTreeError(loc + ("outer_join",), "only members of a join have outer_join")
    if not in_group and leaf.group_by is not None:
        raise InputTreeError(loc + ("group_by",), "only members of a group have a group_by")
    key_name = "join_on" if in_join else "group_by" if in_group else None
    if key_name is None:
        return
    template = getattr(leaf, key_name)
    if template is None:
        raise InputTreeError(loc + (key_name,), f"a {parent.keyword} member needs a {key_name}, "
                                                "e.g. \"$1\" for the glob's first ( ) group")
    try:
        key_of(template, ("",) * groups)
    except ValueError as exc:
        raise InputTreeError(loc + (key_name,), f"{exc} (glob {leaf.glob!r})") from None


def _leaves_at(node: Node, loc: Loc) -> list[tuple[Leaf, Loc]]:
    if isinstance(node, Leaf):
        return [(node, loc)]
    return [pair for i, member in enumerate(node.inputs)
            for pair in _leaves_at(member, loc + (node.keyword, i))]


# --- combining -------------------------------------------------------------------------------
# Each node gives its datums already in planned order, so nothing is sorted at the end: a
# leaf's come sorted by path, a union concatenates, `product` is lexicographic in its parts,
# and joins and groups walk their keys sorted. Mounts come out in spec order the same way.

def _combine(node: Node, open_root: OpenRoot) -> list[Mounts]:
    """The datums of a checked node, in planned order (see `plan_input_tree`)."""
    if isinstance(node, Leaf):  # no captures needed: plan_datums' faster path
        from .datums import plan_datums

        return [d.mounts for d in plan_datums(node.name, open_root(node.url), node.glob, node.exclude)]
    if isinstance(node, Union):
        return [mounts for member in node.inputs for mounts in _combine(member, open_root)]
    if isinstance(node, Cross):
        return _cross([_combine(member, open_root) for member in node.inputs])
    if isinstance(node, Join):
        return _join(node.inputs, open_root)
    return _group(node.inputs, open_root)


def _cross(parts: list[list[Mounts]]) -> list[Mounts]:
    """Every combination of one datum of each part; ordered by the first part, then the next."""
    return [tuple(chain.from_iterable(combo)) for combo in product(*parts)]


def _matches(leaf: Leaf, open_root: OpenRoot) -> list[MatchedDatum]:
    from .datums import plan_matches

    return plan_matches(leaf.name, open_root(leaf.url), leaf.glob, leaf.exclude)


def _keyed(leaf: Leaf, template: str, open_root: OpenRoot) -> dict[str, list[Mounts]]:
    """A leaf's datums by key, each key's in path order."""
    key_format = _parse_key(template)[0].format
    by_key: dict[str, list[Mounts]] = {}
    for m in _matches(leaf, open_root):
        by_key.setdefault(key_format(*m.captures), []).append((Mount(leaf.name, m.path),))
    return by_key


def _join(members: Sequence[Leaf], open_root: OpenRoot) -> list[Mounts]:
    keyed = [_keyed(leaf, leaf.join_on, open_root) for leaf in members]
    out: list[Mounts] = []
    for key in sorted(set().union(*keyed)):
        parts = [(by_key[key], leaf.outer_join) for by_key, leaf in zip(keyed, members) if key in by_key]
        if len(parts) < len(members) and not any(outer for _, outer in parts):
            continue  # an inner match is missing and no member that has this key is outer
        out.extend(_cross([datums for datums, _ in parts]))
    return out


def _group(members: Sequence[Leaf], open_root: OpenRoot) -> list[Mounts]:
    groups: dict[str, list[Mount]] = {}
    for leaf in members:
        for key, datums in _keyed(leaf, leaf.group_by, open_root).items():
            groups.setdefault(key, []).extend(chain.from_iterable(datums))
    return [tuple(groups[key]) for key in sorted(groups)]
