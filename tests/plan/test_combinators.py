"""Input combinators: cross, union, join (outer too), group, nested (PRODUCT.md section 1).

Most cases run over a memory:// input holding the files /foo0 .. /foo49 (Pachyderm's own
examples); joins and groups of two inputs run over small local trees.
"""

from __future__ import annotations

import uuid
from itertools import product
from pathlib import Path

import fsspec
import pytest

from bacalhau_flow.plan import Datum, Mount, cut_into_shards
from bacalhau_flow.plan.combinators import (
    Cross, Group, InputTreeError, Join, Leaf, Union, check_tree, key_of, leaves, plan_input_tree,
)
from bacalhau_flow.plan.datums import plan_datums
from bacalhau_flow.plan.inputs import open_input

FOO_Q1 = ["/foo11", "/foo21", "/foo31", "/foo41"]  # glob /foo?1
FOO_STAR2 = ["/foo12", "/foo2", "/foo22", "/foo32", "/foo42"]  # glob /foo*2, sorted as strings


@pytest.fixture
def foo():
    """A memory:// input holding the files /foo0 .. /foo49."""
    fs = fsspec.filesystem("memory")
    base = f"/combinators-{uuid.uuid4().hex}"
    for i in range(50):
        fs.pipe(f"{base}/foo{i}", str(i).encode())
    yield f"memory://{base}"
    fs.rm(base, recursive=True)


def make_tree(root: Path, files: list[str]) -> str:
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return str(root)


@pytest.fixture
def users_orders(tmp_path: Path) -> tuple[str, str]:
    """Two inputs to join on an id: users 1, 2, 3 and orders of users 1 (two), 2 and 4."""
    users = make_tree(tmp_path / "users", ["1.json", "2.json", "3.json"])
    orders = make_tree(tmp_path / "orders", ["1-a.csv", "1-b.csv", "2-a.csv", "4-a.csv"])
    return users, orders


def as_json(datums: list[Datum]) -> list[dict[str, list[str]]]:
    return [d.to_json() for d in datums]


def join_of(users: str, orders: str, *, users_outer: bool = False, orders_outer: bool = False) -> Join:
    return Join([
        Leaf("users", users, "/(*).json", join_on="$1", outer_join=users_outer),
        Leaf("orders", orders, "/(*)-*.csv", join_on="$1", outer_join=orders_outer),
    ])


# --- the cases over /foo0 .. /foo49 ----------------------------------------------------

def test_a_single_leaf_plans_like_plan_datums(foo):
    datums = plan_input_tree(Leaf("a", foo, "/foo?1"))
    assert datums == plan_datums("a", open_input(foo), "/foo?1")
    assert as_json(datums) == [{"a": [p]} for p in FOO_Q1]


def test_cross_gives_every_combination_with_a_folder_per_input(foo):
    datums = plan_input_tree(Cross([Leaf("a", foo, "/foo?1"), Leaf("b", foo, "/foo*2")]))
    assert len(datums) == 20
    assert as_json(datums) == [{"a": [a], "b": [b]} for a, b in product(FOO_Q1, FOO_STAR2)]
    assert datums[0] == Datum((Mount("a", "/foo11"), Mount("b", "/foo12")))


def test_group_by_first_digit_gives_four_datums_of_ten_files(foo):
    # /foo(?)(?) needs two digits, so foo0..foo9 are no datums; $1 is the first digit
    datums = plan_input_tree(Group([Leaf("in", foo, "/foo(?)(?)", group_by="$1")]))
    assert as_json(datums) == [{"in": [f"/foo{tens}{ones}" for ones in range(10)]} for tens in range(1, 5)]


def test_group_by_second_digit_collects_across_first_digits(foo):
    datums = plan_input_tree(Group([Leaf("in", foo, "/foo(?)(?)", group_by="$2")]))
    assert len(datums) == 10
    assert as_json(datums)[0] == {"in": ["/foo10", "/foo20", "/foo30", "/foo40"]}


def test_union_gives_each_members_datums_unchanged(foo):
    datums = plan_input_tree(Union([Leaf("a", foo, "/foo?1"), Leaf("b", foo, "/foo*2")]))
    assert as_json(datums) == [{"a": [p]} for p in FOO_Q1] + [{"b": [p]} for p in FOO_STAR2]


def test_cross_of_a_union_and_a_leaf(foo):
    tree = Cross([Union([Leaf("a", foo, "/foo?1"), Leaf("b", foo, "/foo*2")]), Leaf("c", foo, "/foo4?")])
    datums = plan_input_tree(tree)
    assert len(datums) == (4 + 5) * 10
    assert datums[0].to_json() == {"a": ["/foo11"], "c": ["/foo40"]}
    assert datums[-1].to_json() == {"b": ["/foo42"], "c": ["/foo49"]}


def test_union_of_crosses(foo):
    tree = Union([Cross([Leaf("a", foo, "/foo1"), Leaf("b", foo, "/foo?1")]),
                  Cross([Leaf("c", foo, "/foo2"), Leaf("d", foo, "/foo*2")])])
    assert len(plan_input_tree(tree)) == 1 * 4 + 1 * 5


def test_cross_with_an_empty_member_has_no_datums(foo):
    assert plan_input_tree(Cross([Leaf("a", foo, "/foo?1"), Leaf("b", foo, "/nothing*")])) == []


def test_exclude_applies_to_a_member(foo):
    tree = Cross([Leaf("a", foo, "/foo?1", exclude=["/foo2*"]), Leaf("b", foo, "/foo1")])
    expected = [{"a": [p], "b": ["/foo1"]} for p in ["/foo11", "/foo31", "/foo41"]]
    assert as_json(plan_input_tree(tree)) == expected


# --- join -----------------------------------------------------------------------------------

def test_inner_join_crosses_the_datums_of_each_key_and_drops_unmatched(users_orders):
    assert as_json(plan_input_tree(join_of(*users_orders))) == [
        {"users": ["/1.json"], "orders": ["/1-a.csv"]},
        {"users": ["/1.json"], "orders": ["/1-b.csv"]},
        {"users": ["/2.json"], "orders": ["/2-a.csv"]},
    ]


def test_outer_join_member_keeps_its_datums_without_a_partner(users_orders):
    datums = as_json(plan_input_tree(join_of(*users_orders, users_outer=True)))
    assert {"users": ["/3.json"]} in datums  # user 3 has no orders but is kept
    assert {"orders": ["/4-a.csv"]} not in datums  # orders is inner: order 4 has no user, dropped
    assert len(datums) == 4


def test_join_with_every_member_outer_is_a_full_outer_join(users_orders):
    datums = as_json(plan_input_tree(join_of(*users_orders, users_outer=True, orders_outer=True)))
    assert len(datums) == 5
    assert {"users": ["/3.json"]} in datums and {"orders": ["/4-a.csv"]} in datums


def test_join_of_foo_on_first_digit(foo):
    # ones of /foo?1 meet the twos of /foo?2 with the same first digit: foo11+foo12, ...
    tree = Join([Leaf("a", foo, "/foo(?)1", join_on="$1"), Leaf("b", foo, "/foo(?)2", join_on="$1")])
    assert as_json(plan_input_tree(tree)) == [{"a": [f"/foo{d}1"], "b": [f"/foo{d}2"]} for d in "1234"]


def test_join_key_combines_several_groups(tmp_path):
    a = make_tree(tmp_path / "a", ["2023/01.txt", "2024/01.txt"])
    b = make_tree(tmp_path / "b", ["01-2024.csv"])
    tree = Join([Leaf("a", a, "/(*)/(*).txt", join_on="$1-$2"),
                 Leaf("b", b, "/(*)-(*).csv", join_on="$2-$1")])
    assert as_json(plan_input_tree(tree)) == [{"a": ["/2024/01.txt"], "b": ["/01-2024.csv"]}]


def test_join_inside_a_cross(users_orders, foo):
    tree = Cross([join_of(*users_orders), Leaf("c", foo, "/foo?1")])
    datums = plan_input_tree(tree)
    assert len(datums) == 3 * 4
    assert datums[0].to_json() == {"users": ["/1.json"], "orders": ["/1-a.csv"], "c": ["/foo11"]}


# --- group of several inputs ------------------------------------------------------------------

def test_group_of_two_inputs_puts_every_file_with_one_key_in_one_datum(users_orders):
    users, orders = users_orders
    tree = Group([Leaf("users", users, "/(*).json", group_by="$1"),
                  Leaf("orders", orders, "/(*)-*.csv", group_by="$1")])
    assert as_json(plan_input_tree(tree)) == [
        {"users": ["/1.json"], "orders": ["/1-a.csv", "/1-b.csv"]},
        {"users": ["/2.json"], "orders": ["/2-a.csv"]},
        {"users": ["/3.json"]},
        {"orders": ["/4-a.csv"]},
    ]


# --- order, JSON and shard ids ----------------------------------------------------------------

def test_mounts_follow_the_spec_order_of_inputs(foo):
    datum = plan_input_tree(Cross([Leaf("zeta", foo, "/foo1"), Leaf("alpha", foo, "/foo2")]))[0]
    assert datum.mounts == (Mount("zeta", "/foo1"), Mount("alpha", "/foo2"))
    assert list(datum.to_json()) == ["zeta", "alpha"]


def test_cross_datum_json_round_trips(foo):
    datum = plan_input_tree(Cross([Leaf("a", foo, "/foo?1"), Leaf("b", foo, "/foo*2")]))[0]
    assert datum.to_json() == {"a": ["/foo11"], "b": ["/foo12"]}
    assert Datum.from_json(datum.to_json()) == datum


def test_union_members_come_in_spec_order_not_by_name(foo):
    datums = plan_input_tree(Union([Leaf("zeta", foo, "/foo1"), Leaf("alpha", foo, "/foo2")]))
    assert as_json(datums) == [{"zeta": ["/foo1"]}, {"alpha": ["/foo2"]}]


def test_join_and_group_datums_come_by_key(tmp_path):
    # the key order (1, 2, 3) is not the path order of either input
    a = make_tree(tmp_path / "a", ["x-3.txt", "y-1.txt", "z-2.txt"])
    b = make_tree(tmp_path / "b", ["1/b.txt", "2/a.txt", "3/c.txt"])
    tree = Join([Leaf("a", a, "/*-(*).txt", join_on="$1"), Leaf("b", b, "/(*)/*.txt", join_on="$1")])
    assert [d.to_json()["a"] for d in plan_input_tree(tree)] == [["/y-1.txt"], ["/z-2.txt"], ["/x-3.txt"]]
    group = Group([Leaf("a", a, "/*-(*).txt", group_by="$1")])
    assert as_json(plan_input_tree(group)) == [{"a": ["/y-1.txt"]}, {"a": ["/z-2.txt"]}, {"a": ["/x-3.txt"]}]


def test_planning_twice_gives_the_same_datums_and_shard_ids(foo):
    tree = Cross([Group([Leaf("g", foo, "/foo(?)(?)", group_by="$1")]), Leaf("b", foo, "/foo*2")])
    first, second = plan_input_tree(tree), plan_input_tree(tree)
    assert first == second
    assert first[0].to_json() == {"g": [f"/foo1{d}" for d in range(10)], "b": ["/foo12"]}
    ids = [s.id for s in cut_into_shards("p", first, 3)]
    assert ids == [s.id for s in cut_into_shards("p", second, 3)]
    assert len(ids) == len(set(ids)) == 7  # 4 groups x 5 files = 20 datums, 3 per shard


# --- keys -------------------------------------------------------------------------------------

@pytest.mark.parametrize("template, key", [
    ("$1", "a"), ("$2", "b"), ("$1-$2", "a-b"), ("${1}0", "a0"), ("$$1", "$1"), ("fixed", "fixed"),
    ("{$1}", "{a}"), ("$2$1", "ba"),
])
def test_key_of_substitutes_capture_groups(template, key):
    assert key_of(template, ("a", "b")) == key


@pytest.mark.parametrize("template, message", [
    ("$3", "names capture group 3, but the glob has 2"),
    ("$0", "numbered from 1"),
    ("$x", "followed by a group number"),
    ("price$", "followed by a group number"),
])
def test_key_of_rejects_bad_references(template, message):
    with pytest.raises(ValueError, match=message):
        key_of(template, ("a", "b"))


# --- bad trees ----------------------------------------------------------------------------------

@pytest.mark.parametrize("tree, message", [
    (Cross([Leaf("a", "x"), Union([Leaf("b", "y"), Leaf("a", "z")])]),
     r"input\.cross\[1\]\.union\[1\]\.name: input name 'a' is already used by input\.cross\[0\]"),
    (Union([Leaf("a", "x"), Leaf("a", "y")]), r"input\.union\[1\]\.name: input name 'a'"),
    (Cross([]), r"input\.cross: needs at least one input"),
    (Join([Leaf("a", "x", "/(*)", join_on="$1"), Cross([Leaf("b", "y")])]),
     r"input\.join\[1\]: members of a join are single inputs"),
    (Join([Leaf("a", "x", "/(*)", join_on="$1"), Leaf("b", "y", "/(*)")]),
     r"input\.join\[1\]\.join_on: a join member needs a join_on"),
    (Join([Leaf("a", "x", "/(*)", join_on="$2")]),
     r"input\.join\[0\]\.join_on: .*glob has 1 capture group"),
    (Group([Leaf("a", "x", "/*", group_by="$1")]), r"input\.group\[0\]\.group_by: .*glob has 0"),
    (Group([Leaf("a", "x", "/(*)", join_on="$1")]), r"input\.group\[0\]\.join_on: only members of a join"),
    (Cross([Leaf("a", "x", "/(*)", join_on="$1")]), r"input\.cross\[0\]\.join_on: only members of a join"),
    (Leaf("a", "x", "/(*)", outer_join=True), r"input\.outer_join: only members of a join"),
    (Join([Leaf("a", "x", "/(*)", join_on="$1", group_by="$1")]), r"input\.join\[0\]\.group_by"),
    (Cross([Leaf("a", "x", "/[")]), r"input\.cross\[0\]\.glob: .*unclosed"),
    (Cross([Leaf("a", "x", exclude=["/{"])]), r"input\.cross\[0\]\.exclude\[0\]: .*unclosed"),
])
def test_bad_trees_raise_value_errors_naming_the_field(tree, message):
    with pytest.raises(ValueError, match=message):
        check_tree(tree)


def test_tree_errors_carry_the_field_as_a_loc_for_the_spec_layer():
    with pytest.raises(InputTreeError) as info:
        check_tree(Cross([Leaf("a", "x"), Join([Leaf("b", "y", "/(*)")])]))
    assert info.value.loc == ("cross", 1, "join", 0, "join_on")
    assert info.value.detail.startswith("a join member needs a join_on")
    assert str(info.value).startswith("input.cross[1].join[0].join_on: a join member")


def test_a_bad_tree_is_rejected_before_anything_is_listed():
    def open_root(url):
        raise AssertionError("listed")

    with pytest.raises(ValueError, match="already used"):
        plan_input_tree(Cross([Leaf("a", "x"), Leaf("a", "y")]), open_root)


def test_leaves_lists_every_input_depth_first_in_spec_order():
    tree = Cross([Union([Leaf("a", "u1"), Leaf("b", "u2")]), Join([Leaf("c", "u3", "/(*)", join_on="$1")])])
    assert [(leaf.name, leaf.url) for leaf in leaves(tree)] == [("a", "u1"), ("b", "u2"), ("c", "u3")]


def test_trees_are_immutable_values():
    tree = Cross([Leaf("a", "x", exclude=["/b"])])
    same = Cross((Leaf("a", "x", exclude=("/b",)),))
    assert tree == same and hash(tree) == hash(same)
    assert tree != Union([Leaf("a", "x", exclude=["/b"])])
