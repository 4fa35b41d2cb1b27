"""plan_datums: glob + exclude over an input root gives non-overlapping datums (section 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bacalhau_flow.plan import Datum, cut_into_shards
from bacalhau_flow.plan.datums import plan_datums, plan_matches
from bacalhau_flow.plan.inputs import open_input

TREE = [
    "a.txt",
    "b.txt",
    "c.csv",
    ".hidden.txt",
    "books/moby.txt",
    "books/ulysses.txt",
    "books/old/iliad.txt",
    "drafts/d1.txt",
    "drafts/notes/n.md",
    "logs/2023/jan.log",
    "logs/2024/feb.log",
]


def make_tree(root: Path, files: list[str], dirs: list[str] = ()) -> Path:
    for rel in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    for rel in dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def tree(tmp_path: Path):
    return open_input(str(make_tree(tmp_path / "in", TREE)))


def paths(root, glob: str, exclude: list[str] = ()) -> list[str]:
    datums = plan_datums("in", root, glob, list(exclude))
    assert all(len(d.mounts) == 1 and d.mounts[0].input == "in" for d in datums)
    return [d.mounts[0].path for d in datums]


def test_star_txt_gives_one_datum_per_top_level_txt_file(tree):
    assert paths(tree, "/*.txt") == ["/.hidden.txt", "/a.txt", "/b.txt"]


def test_pattern_without_leading_slash_is_rooted(tree):
    assert paths(tree, "*.txt") == paths(tree, "/*.txt")


def test_root_glob_gives_one_datum_holding_the_whole_input(tree):
    assert plan_datums("in", tree, "/", []) == [Datum.single("in", "/")]


def test_root_glob_on_an_empty_directory_still_gives_one_datum(tmp_path):
    (tmp_path / "empty").mkdir()
    assert paths(open_input(str(tmp_path / "empty")), "/") == ["/"]


def test_double_star_gives_every_file_exactly_once_and_no_directories(tree):
    assert paths(tree, "/**") == sorted("/" + f for f in TREE)


def test_star_matching_directories_gives_a_datum_of_each_whole_subtree(tree):
    assert paths(tree, "/*") == ["/.hidden.txt", "/a.txt", "/b.txt", "/books", "/c.csv", "/drafts", "/logs"]


def test_path_inside_a_matched_directory_is_not_a_datum_of_its_own(tree):
    # "/books" matches, so "/books/moby.txt" and "/books/old" do not become datums too
    assert paths(tree, "/{books,books/*,books/**}") == ["/books"]
    assert paths(tree, "/{logs/*,logs/*/*}") == ["/logs/2023", "/logs/2024"]


def test_datums_of_one_input_never_overlap(tree):
    for glob in ["/*", "/**", "/*/*", "/{books,books/old,books/old/iliad.txt}", "{/*,/*/*,/*/*/*}"]:
        got = paths(tree, glob)
        for p in got:
            assert not any(q != p and q.startswith(p + "/") for q in got), (glob, p)


def test_directories_at_depth_two(tree):
    assert paths(tree, "/*/*") == [
        "/books/moby.txt", "/books/old", "/books/ulysses.txt", "/drafts/d1.txt", "/drafts/notes",
        "/logs/2023", "/logs/2024"]


def test_braces_choose_alternatives(tree):
    assert paths(tree, "/{a,c}.*") == ["/a.txt", "/c.csv"]
    assert paths(tree, "/{books/*.txt,logs/2024/*}") == ["/books/moby.txt", "/books/ulysses.txt", "/logs/2024/feb.log"]


def test_question_mark_and_classes(tree):
    assert paths(tree, "/?.txt") == ["/a.txt", "/b.txt"]
    assert paths(tree, "/[ab].txt") == ["/a.txt", "/b.txt"]
    assert paths(tree, "/[!a].txt") == ["/b.txt"]
    assert paths(tree, "/logs/202[0-3]") == ["/logs/2023"]


def test_double_star_under_a_directory(tree):
    assert paths(tree, "/books/**") == ["/books/moby.txt", "/books/old/iliad.txt", "/books/ulysses.txt"]
    assert paths(tree, "/**/*.log") == ["/logs/2023/jan.log", "/logs/2024/feb.log"]


def test_exclude_drops_datums_matching_any_exclude_pattern(tree):
    assert paths(tree, "/**", ["/drafts/**", "/logs/**", "/.*"]) == [
        "/a.txt", "/b.txt", "/books/moby.txt", "/books/old/iliad.txt", "/books/ulysses.txt", "/c.csv"]


def test_exclude_of_a_directory_datum_needs_a_pattern_matching_that_directory(tree):
    # "/drafts/**" matches files only, so it does not drop the directory datum "/drafts"
    assert "/drafts" in paths(tree, "/*", ["/drafts/**"])
    assert "/drafts" not in paths(tree, "/*", ["/drafts"])


def test_excluding_a_matched_directory_does_not_turn_its_contents_into_datums(tree):
    assert paths(tree, "/{books,books/*}", ["/books"]) == []


def test_exclude_can_drop_the_root_datum(tree):
    assert paths(tree, "/", ["/"]) == []
    assert paths(tree, "/", ["/*"]) == ["/"]


def test_glob_that_matches_nothing_gives_no_datums(tree):
    assert plan_datums("in", tree, "/*.parquet", []) == []


def test_datums_are_sorted_by_path(tree):
    got = paths(tree, "{/*,/books/*}")
    assert got == sorted(got)


def test_bad_glob_raises_value_error(tree):
    with pytest.raises(ValueError, match="unclosed"):
        plan_datums("in", tree, "/[a", [])


def test_bad_exclude_pattern_raises_value_error(tree):
    with pytest.raises(ValueError, match="unclosed"):
        plan_datums("in", tree, "/*", ["/{a"])


def test_plan_matches_exposes_capture_groups_alongside_the_datums(tree):
    matches = plan_matches("in", tree, "/logs/(*)/(*).log")
    assert [(m.path, m.is_dir, m.captures) for m in matches] == [
        ("/logs/2023/jan.log", False, ("2023", "jan")),
        ("/logs/2024/feb.log", False, ("2024", "feb")),
    ]
    assert [m.datum for m in matches] == plan_datums("in", tree, "/logs/(*)/(*).log")


def test_captures_on_directory_datums(tree):
    assert [(m.path, m.captures) for m in plan_matches("in", tree, "/logs/(20)(*)")] == [
        ("/logs/2023", ("20", "23")), ("/logs/2024", ("20", "24"))]


def test_single_file_input_acts_as_a_directory_holding_that_file(tmp_path):
    (tmp_path / "one.csv").write_text("x")
    root = open_input(str(tmp_path / "one.csv"))
    assert paths(root, "/") == ["/"]
    assert paths(root, "/*") == ["/one.csv"]
    assert paths(root, "/**") == ["/one.csv"]
    assert paths(root, "/*.txt") == []


def test_empty_directories_match_directory_globs_only(tmp_path):
    root = open_input(str(make_tree(tmp_path / "in", ["f.txt"], dirs=["empty"])))
    assert paths(root, "/*") == ["/empty", "/f.txt"]
    assert paths(root, "/**") == ["/f.txt"]


def test_datums_cut_into_shards_in_path_order(tree):
    shards = cut_into_shards("wc", plan_datums("in", tree, "/**"), 4)
    assert [s.index for s in shards] == [0, 1, 2]
    assert [d.to_json()["in"][0] for d in shards[0].datums] == ["/.hidden.txt", "/a.txt", "/b.txt", "/books/moby.txt"]


def test_planning_is_the_same_over_memory_and_local_filesystems(tree, tmp_path):
    import uuid

    import fsspec

    fs = fsspec.filesystem("memory")
    base = f"/plan-{uuid.uuid4().hex}"
    try:
        for rel in TREE:
            fs.pipe(f"{base}/in/{rel}", rel.encode())
        mem = open_input(f"memory://{base}/in")
        for glob in ["/", "/*", "/**", "/*/*", "/*.txt", "/logs/*"]:
            assert paths(mem, glob) == paths(tree, glob), glob
    finally:
        fs.rm(base, recursive=True)
