"""compile_glob: the glob rules of PRODUCT.md section 3, one behaviour per test."""

from __future__ import annotations

import re

import pytest

from bacalhau_flow.plan.glob import compile_glob, normalise_pattern

F, D = False, True  # is_dir


def hits(pattern: str, *paths: tuple[str, bool]) -> list[str]:
    g = compile_glob(pattern)
    return [p for p, is_dir in paths if g.match(p, is_dir) is not None]


def test_star_txt_matches_top_level_txt_files_only():
    assert hits("/*.txt", ("/a.txt", F), ("/b.csv", F), ("/d/c.txt", F), ("/x.txt", D)) == ["/a.txt", "/x.txt"]


def test_star_never_crosses_a_slash():
    g = compile_glob("/a*")
    assert g.match("/abc", F) == ()
    assert g.match("/a/b", F) is None


def test_star_matches_the_empty_string_and_dotfiles():
    assert hits("/a*", ("/a", F)) == ["/a"]
    assert hits("/*", ("/.hidden", F)) == ["/.hidden"]


def test_question_mark_matches_exactly_one_character_but_not_a_slash():
    assert hits("/a?c", ("/abc", F), ("/ac", F), ("/abbc", F), ("/a/c", F)) == ["/abc"]


def test_class_matches_one_character_of_the_set_or_range():
    assert hits("/[ab]1", ("/a1", F), ("/b1", F), ("/c1", F)) == ["/a1", "/b1"]
    assert hits("/f[0-9].txt", ("/f7.txt", F), ("/fx.txt", F)) == ["/f7.txt"]


@pytest.mark.parametrize("pattern", ["/[!ab]1", "/[^ab]1"])
def test_negated_class_matches_any_other_character(pattern):
    assert hits(pattern, ("/a1", F), ("/b1", F), ("/c1", F)) == ["/c1"]


def test_class_never_matches_a_slash_even_through_a_range_or_negation():
    assert hits("/a[.-0]b", ("/a/b", F), ("/a.b", F)) == ["/a.b"]
    assert hits("/a[!x]b", ("/a/b", F), ("/ayb", F)) == ["/ayb"]


def test_close_bracket_first_in_a_class_is_literal():
    assert hits("/[]a]", ("/]", F), ("/a", F), ("/b", F)) == ["/]", "/a"]
    assert hits("/[!]]", ("/]", F), ("/b", F)) == ["/b"]


def test_braces_are_alternatives():
    assert hits("/{a,b}.txt", ("/a.txt", F), ("/b.txt", F), ("/c.txt", F)) == ["/a.txt", "/b.txt"]


def test_braces_nest_and_may_contain_slashes():
    g = compile_glob("/{logs/{2023,2024},data}/*.csv")
    assert g.match("/logs/2024/x.csv", F) == ()
    assert g.match("/data/x.csv", F) == ()
    assert g.match("/logs/2022/x.csv", F) is None


def test_comma_outside_braces_is_literal():
    assert hits("/a,b", ("/a,b", F), ("/a", F)) == ["/a,b"]


def test_double_star_matches_files_at_any_depth():
    assert hits("/**", ("/a", F), ("/d/b", F), ("/d/e/c", F)) == ["/a", "/d/b", "/d/e/c"]


def test_double_star_never_matches_directories():
    assert hits("/**", ("/d", D), ("/d/e", D)) == []
    assert hits("/d/**", ("/d/e", D), ("/d/e/f.txt", F)) == ["/d/e/f.txt"]


def test_double_star_between_slashes_also_matches_zero_directories():
    assert hits("/a/**/b.txt", ("/a/b.txt", F), ("/a/x/b.txt", F), ("/a/x/y/b.txt", F), ("/ab.txt", F)) == [
        "/a/b.txt", "/a/x/b.txt", "/a/x/y/b.txt"]


def test_double_star_in_one_alternative_does_not_stop_another_from_matching_a_directory():
    assert hits("{/a,/**}", ("/a", D), ("/b", D), ("/b/c", F)) == ["/a", "/b/c"]


def test_root_pattern_matches_the_root_only():
    g = compile_glob("/")
    assert g.match("/", True) == ()
    assert g.match("/a", True) is None
    assert g.match("/a", False) is None


@pytest.mark.parametrize("pattern", ["/*", "/**", "/?", "/[a]", "/(*)"])
def test_wildcards_never_match_the_root(pattern):
    assert compile_glob(pattern).match("/", True) is None


@pytest.mark.parametrize("given, normalised", [
    ("*.txt", "/*.txt"),
    ("/a/", "/a"),
    ("a/b//", "/a/b"),
    ("/", "/"),
    ("//", "/"),
    ("{/a,/b}", "{/a,/b}"),  # every alternative already starts with "/"
    ("{a,b}", "/{a,b}"),
])
def test_pattern_gets_a_leading_slash_and_loses_trailing_slashes(given, normalised):
    assert normalise_pattern(given) == normalised
    assert compile_glob(given).pattern == normalised


def test_trailing_slash_does_not_restrict_to_directories():
    assert hits("/a/", ("/a", F), ("/a", D)) == ["/a", "/a"]


def test_capture_groups_return_what_they_matched():
    assert compile_glob("/foo(?)(?)").match("/foo12", False) == ("1", "2")
    assert compile_glob("/(*)/(*).csv").match("/2024/jan.csv", False) == ("2024", "jan")


def test_pattern_without_groups_gives_an_empty_tuple_and_counts_no_groups():
    g = compile_glob("/*.txt")
    assert g.match("/a.txt", False) == ()
    assert g.groups == 0


def test_groups_are_numbered_by_opening_parenthesis_and_may_nest():
    g = compile_glob("/((a)(b))(c)")
    assert g.groups == 4
    assert g.match("/abc", False) == ("ab", "a", "b", "c")


def test_group_in_an_alternative_not_taken_captures_the_empty_string():
    assert compile_glob("/{(a),(b)}").match("/b", False) == ("", "b")


def test_group_around_double_star_captures_across_directories():
    assert compile_glob("/(**).txt").match("/x/y/z.txt", False) == ("x/y/z",)


def test_backslash_makes_special_characters_literal():
    assert hits(r"/a\(1\)\*.txt", ("/a(1)*.txt", F), ("/a1x.txt", F)) == ["/a(1)*.txt"]
    assert hits(r"/\{a,b\}", ("/{a,b}", F), ("/a", F)) == ["/{a,b}"]


def test_regex_metacharacters_are_literal():
    assert hits("/a.b+c$^|x", ("/a.b+c$^|x", F), ("/aXb+c$^|x", F), ("/abbc", F)) == ["/a.b+c$^|x"]


def test_the_whole_path_must_match():
    assert hits("/a", ("/ab", F), ("/a/b", F), ("/xa", F)) == []


@pytest.mark.parametrize("bad, reason", [
    ("", "empty"),
    ("/[a", "unclosed '['"),
    ("/[]", "unclosed '['"),
    ("/[!]", "unclosed '['"),
    ("/{a,b", "unclosed '{'"),
    ("/{a,{b}", "unclosed '{'"),
    ("/(a", "unclosed '('"),
    ("/a)", "unmatched ')'"),
    ("/a}", "unmatched '}'"),
    ("/{(a})", "unmatched '}'"),
    ("/[a/b]", "cannot contain '/'"),
    ("/[z-a]", "reversed range"),
    ("/a\\", "escapes nothing"),
])
def test_bad_patterns_raise_value_error_with_a_clear_message(bad, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        compile_glob(bad)


def test_non_string_pattern_raises_value_error():
    with pytest.raises(ValueError, match="must be a string"):
        compile_glob(None)  # type: ignore[arg-type]


def test_select_agrees_with_match():
    g = compile_glob("/*/*.txt")
    files = ["/a/b.txt", "/a.txt", "/a/b/c.txt", "/x/y.txt"]
    assert g.select(files, False) == [p for p in files if g.match(p, False) is not None]
    assert compile_glob("/**").select(["/a", "/a/b"], True) == []


def test_compiled_patterns_compare_by_normalised_pattern():
    assert compile_glob("*.txt") == compile_glob("/*.txt")
    assert len({compile_glob("a/"), compile_glob("/a")}) == 1
