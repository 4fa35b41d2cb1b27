"""Every spec error of a file at once, in line order, each `file:line:column: field: message`;
files that are no YAML at all, too deep, huge or empty get one located error, never a traceback."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest
import yaml
from cli_helpers import PIPELINES, bflow

from bacalhau_flow.errors import InputNotFound, SpecError, SpecErrors
from bacalhau_flow.spec import load_spec, load_spec_text
from bacalhau_flow.spec.source import MAX_DEPTH

OK_REST = "input: {url: data}\ntransform: {cmd: [x]}\n"


def write(tmp_path: Path, content: str | bytes, name: str = "spec.yaml") -> Path:
    spec = tmp_path / name
    spec.write_bytes(content.encode() if isinstance(content, str) else content)
    (tmp_path / "data").mkdir(exist_ok=True)
    return spec


def validate(spec: Path, *args: str) -> tuple[int, list[str]]:
    """`bflow validate SPEC` (or another command): its exit code and its error lines, without
    `error: ` and the hint; asserts it printed no traceback."""
    r = bflow(*(args or ("validate",)), spec)
    assert "Traceback" not in r.stderr and "Error:" not in r.stderr, r.stderr
    lines = [line.removeprefix("error: ") for line in r.stderr.splitlines() if not line.startswith("hint:")]
    return r.code, lines


def located(lines: list[str], spec: Path) -> list[tuple[int, int, str]]:
    """(line, column, rest) of each error line; every one must be `spec:line:column: ...`."""
    found = []
    for line in lines:
        match = re.fullmatch(rf"{re.escape(str(spec))}:(\d+):(\d+): (.*)", line)
        assert match, f"not located: {line!r}"
        found.append((int(match[1]), int(match[2]), match[3]))
    return found


# --- every error at once, in line order ---------------------------------------------------------

MANY = """\
retries: -1
pipeline: Bad Name
input:
  url: data
  globb: "/*"
transform: {cmd: [x]}
resources: {cpu: lots}
retries: 2
"""


def test_every_error_is_reported_at_once_in_line_order(tmp_path):
    spec = write(tmp_path, MANY)
    code, lines = validate(spec)
    assert code == 2
    errors = located(lines, spec)
    assert [(line, column) for line, column, _ in errors] == [(2, 11), (5, 3), (7, 18), (8, 1)]
    messages = [rest for _, _, rest in errors]
    assert messages[0].startswith("pipeline: invalid pipeline name 'Bad Name'")
    assert messages[1] == "input.globb: unknown field 'globb' (did you mean 'glob'?)"
    assert messages[2] == "resources.cpu: 'lots' is not a number of cores, e.g. 0.5 or 2 (or millicores, e.g. '500m')"
    assert messages[3] == "retries: duplicate key 'retries' (first at line 1)"


def test_several_errors_are_one_spec_errors_with_the_first_as_its_location(tmp_path):
    spec = write(tmp_path, MANY)
    with pytest.raises(SpecErrors) as info:
        load_spec(spec)
    err = info.value
    assert isinstance(err, SpecError) and err.exit_code == 2
    assert [(e.line, e.column) for e in err.errors] == [(2, 11), (5, 3), (7, 18), (8, 1)]
    assert (err.line, err.column, err.field) == (2, 11, "pipeline")
    assert str(err).splitlines() == [str(e) for e in err.errors]


def test_errors_of_several_documents_and_duplicate_names_come_together(tmp_path):
    text = ("pipeline: a\n" + OK_REST + "timeout: soon\n---\n"          # 4:10
            "pipeline: b\ninput: {url: data, glob: '/[x'}\ntransform: {cmd: [x]}\n---\n"  # 7:26
            "pipeline: c\n" + OK_REST + "---\npipeline: c\n" + OK_REST)  # 14:11
    spec = write(tmp_path, text)
    code, lines = validate(spec)
    assert code == 2
    errors = located(lines, spec)
    assert [(line, field.split(":")[0]) for line, _, field in errors] == [
        (4, "a.timeout"), (7, "b.input.glob"), (14, "c.pipeline")]
    assert "duplicate pipeline name 'c' (first defined at line 10)" in errors[2][2]


def test_a_typo_is_reported_but_not_the_missing_field_it_explains():
    with pytest.raises(SpecError) as info:
        load_spec_text("pipeline: wc\ninput: {url: data}\ntransfrom: {cmd: [x]}\n", source="s.yaml")
    assert not isinstance(info.value, SpecErrors)
    assert str(info.value) == "s.yaml:3:1: wc.transfrom: unknown field 'transfrom' (did you mean 'transform'?)"


def test_a_malformed_document_hides_only_its_own_content_errors():
    text = "pipeline: a\n" + OK_REST + "retries: -1\n---\npipeline: b\nretries: -1\ninput: {url: [\n"
    with pytest.raises(SpecErrors) as info:
        load_spec_text(text)
    assert [(e.line, e.field) for e in info.value.errors] == [(4, "a.retries"), (9, None)]
    assert "invalid YAML" in info.value.errors[1].detail


def test_at_most_twenty_errors_are_listed_and_the_hint_counts_the_rest():
    text = "pipeline: wc\n" + OK_REST + "".join(f"extra{i}: 1\n" for i in range(30))
    with pytest.raises(SpecErrors) as info:
        load_spec_text(text)
    assert len(info.value.errors) == 20 and info.value.more == 10
    assert "10 more error(s) not shown" in info.value.hint


# --- url: . --------------------------------------------------------------------------------------

def test_url_dot_names_the_input_after_the_spec_folder(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    spec = write(folder, "pipeline: wc\ninput: {url: .}\ntransform: {cmd: [x]}\n")
    (p,) = load_spec(spec)
    assert p.input.name == "books" and p.input_url == str(folder)
    code, lines = validate(spec)
    assert code == 0, lines


def test_a_url_naming_no_folder_says_to_set_name_at_the_url_line(tmp_path):
    spec = write(tmp_path, "pipeline: wc\ninput:\n  glob: /*\n  url: /\ntransform: {cmd: [x]}\n")
    code, lines = validate(spec)
    assert code == 2
    assert located(lines, spec) == [(4, 3, "wc.input.url: cannot derive an input name from url '/': "
                                           "give the input a name (name: data)")]


# --- nesting, size, emptiness --------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["block", "flow"])
def test_a_thousand_levels_of_nesting_is_a_located_error(tmp_path, shape):
    if shape == "block":
        text = "pipeline: wc\ninput:\n" + "".join("  " * (i + 1) + "-\n" for i in range(1000))
    else:
        text = "pipeline: wc\ninput: " + "[" * 1000 + "]" * 1000 + "\n"
    spec = write(tmp_path, text)
    code, lines = validate(spec)
    assert code == 2
    ((line, column, message),) = located(lines, spec)
    assert message == f"nested too deeply (more than {MAX_DEPTH} levels)"
    # the document's mapping is the first level: the 100th list nested in it is one too many
    assert (line, column) == ((2 + MAX_DEPTH, 2 * MAX_DEPTH + 1) if shape == "block" else (2, 7 + MAX_DEPTH))


def test_nesting_up_to_the_limit_is_only_checked_by_the_models(tmp_path):
    spec = write(tmp_path, "pipeline: wc\n" + OK_REST + "selector: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))
    code, lines = validate(spec)
    assert code == 2 and located(lines, spec)[0][2] == "wc.selector: expected a mapping, got a list"


def test_a_15_mb_comment_only_file_is_one_quick_error(tmp_path):
    spec = write(tmp_path, "# a comment, as long as the ones in the fuzzed specs were\n" * 260_000)
    assert spec.stat().st_size > 15_000_000
    started = time.monotonic()
    code, lines = validate(spec)
    assert time.monotonic() - started < 5
    assert code == 2
    assert located(lines, spec) == [
        (1, 1, "the file holds only comments: no pipeline (expected a mapping with a 'pipeline' key)")]


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml parses in pure Python")
def test_a_pipeline_after_15_mb_of_comments_loads_quickly(tmp_path):
    spec = write(tmp_path, "# padding\n" * 1_500_000 + "pipeline: wc\n" + OK_REST)
    started = time.monotonic()
    (p,) = load_spec(spec)
    assert p.name == "wc" and time.monotonic() - started < 5


@pytest.mark.parametrize("content, message", [
    ("", "the file is empty: no pipeline"),
    ("  \n\n\t\n", "the file is empty: no pipeline"),
    ("---\n...\n", "only empty documents: no pipeline"),
])
def test_an_empty_file_is_one_error_at_line_1(tmp_path, content, message):
    spec = write(tmp_path, content)
    code, lines = validate(spec)
    assert code == 2
    ((line, column, rest),) = located(lines, spec)
    assert (line, column) == (1, 1) and rest.startswith(message)


# --- no error without a place --------------------------------------------------------------------

@pytest.mark.parametrize("content, where, message", [
    (b"pipeline: wc\ninput: {url: d\xffta}\n", (2, 15), "not a UTF-8 text file (invalid start byte: byte 0xff)"),
    (b"\xff\xfe\x00p\x00i\x00", (1, 1), "not a UTF-8 text file"),
    (b"pipeline: wc\n  in\x00put: 1\n", (2, 5), "a NUL byte: this looks like a binary file, not YAML"),
    (b"pipeline: wc\x07\n", (1, 13), "character U+0007 is not allowed in YAML"),
    (b"\x00" * 64, (1, 1), "a NUL byte"),
])
def test_unreadable_files_are_located(tmp_path, content, where, message):
    spec = write(tmp_path, content)
    code, lines = validate(spec)
    assert code == 2
    ((line, column, rest),) = located(lines, spec)
    assert (line, column) == where and rest.startswith(message)


def test_a_missing_input_folder_points_at_its_url_line(tmp_path):
    spec = write(tmp_path, "pipeline: wc\ninput:\n  cross:\n    - url: data\n    - url: nowhere\n"
                           "transform: {cmd: [x]}\n")
    assert validate(spec)[0] == 0  # validate reads no inputs
    code, lines = validate(spec, "run")
    assert code == 2
    assert located(lines, spec) == [(5, 12, f"wc.input.cross[1].url: input 'nowhere': no such file or "
                                            f"directory: 'nowhere' ({tmp_path / 'nowhere'})")]
    (p,) = load_spec(spec)
    with pytest.raises(InputNotFound):  # still what the planner raises for a url naming nothing
        p.resolve_upstreams({})


# --- plain messages, short excerpts -------------------------------------------------------------

def test_a_cpu_that_is_no_number_is_a_plain_message(tmp_path):
    spec = write(tmp_path, "pipeline: wc\n" + OK_REST + "resources: {cpu: lots}\n")
    code, lines = validate(spec)
    assert code == 2
    (error,) = located(lines, spec)
    assert error == (4, 18, "wc.resources.cpu: 'lots' is not a number of cores, e.g. 0.5 or 2 "
                            "(or millicores, e.g. '500m')")
    assert "Input should be" not in lines[0]


def test_a_file_that_is_no_yaml_is_never_echoed_whole(tmp_path):
    prose = " ".join(random.Random(5).choice(["alpha", "beta", "gamma", "delta"]) for _ in range(400))[:2048]
    spec = write(tmp_path, prose)
    code, lines = validate(spec)
    assert code == 2
    ((line, column, message),) = located(lines, spec)
    assert (line, column) == (1, 1) and "(2048 characters)" in message
    assert len(message) < 200 and prose[:70] in message and prose[100:] not in message


def test_long_keys_and_values_are_cut_to_an_excerpt(tmp_path):
    spec = write(tmp_path, f"pipeline: {'x' * 3000}\n{'k' * 1000}: 1\n" + OK_REST)  # YAML keys: < 1024
    code, lines = validate(spec)
    assert code == 2 and len(lines) == 2
    assert all(len(line) < 400 for line in lines)


def test_markup_like_text_in_a_message_is_printed_as_it_is(tmp_path):
    spec = write(tmp_path, "pipeline: wc\n" + OK_REST + "'[/x]': 1\n")
    code, lines = validate(spec)
    assert code == 2 and "unknown field '[/x]'" in lines[0]


# --- fuzz ----------------------------------------------------------------------------------------

NOISE = b" :-[]{}#&*!|>'\"%@`,?\t\n\x00\x07\xff\xc3abcXYZ019."


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random edits: bytes deleted, inserted or replaced, lines copied, shuffled, cut or
    re-indented, deep brackets."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(out) + 1)
        lines = out.split(b"\n")
        kind = rng.randrange(7)
        if kind == 0:
            del out[at:at + rng.randint(1, 8)]
        elif kind == 1:
            out[at:at] = bytes(rng.choice(NOISE) for _ in range(rng.randint(1, 4)))
        elif kind == 2 and out:
            out[min(at, len(out) - 1)] = rng.choice(NOISE)
        elif kind == 3:
            lines.insert(rng.randrange(len(lines)), rng.choice(lines))
            out = bytearray(b"\n".join(lines))
        elif kind == 4:
            rng.shuffle(lines)
            out = bytearray(b"\n".join(lines[:rng.randint(0, len(lines))]))
        elif kind == 5:
            out[at:at] = b"[" * rng.randint(50, 300)
        else:
            i = rng.randrange(len(lines))
            lines[i] = b" " * rng.randint(0, 6) + lines[i].lstrip()
            out = bytearray(b"\n".join(lines))
    return bytes(out)


def test_200_mutations_of_wordcount_validate_or_fail_located(tmp_path):
    original = (PIPELINES / "wordcount.yaml").read_bytes()
    rng = random.Random(20240601)
    outcomes = {0: 0, 2: 0}
    started = time.monotonic()
    for n in range(200):
        spec = write(tmp_path, _mutate(rng, original), f"m{n}.yaml")
        code, lines = validate(spec)
        assert code in (0, 2), (spec.read_bytes(), lines)
        if code == 2:
            assert lines and located(lines, spec), (spec.read_bytes(), lines)
        outcomes[code] += 1
    assert outcomes[0] and outcomes[2] > outcomes[0]  # most mutations break it; some are harmless
    assert time.monotonic() - started < 15
