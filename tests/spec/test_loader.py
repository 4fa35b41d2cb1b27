"""Loading spec files: multi-document YAML, and located errors for every kind of mistake."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bacalhau_flow.errors import SpecError
from bacalhau_flow.spec import json_schema, load_spec, load_spec_text
from bacalhau_flow.spec.schema import SCHEMA_FILE, render

WORDCOUNT = """\
pipeline: wordcount
description: Count words per book
input:
  name: books
  url: data/books
  glob: "/*.txt"
  exclude: ["/drafts/**"]
  batch_size: 1
transform:
  executor: local
  cmd: ["sh", "-c", "wc -w $BFLOW_INPUTS/books/*.txt > $BFLOW_OUTPUTS/counts.txt"]
  stdin: "optional text piped to cmd"
  env: {GREETING: hello}
resources: {cpu: 0.5, memory: 256Mi, disk: 1Gi, gpu: 0}
selector: {region: eu}
network: none
retries: 2
timeout: 10m
output:
  conflict: error
schedule: {cron: "0 * * * *"}
reprocess: changed
"""

MINIMAL = "pipeline: {name}\ninput: {{url: data}}\ntransform: {{cmd: [echo, hi]}}\n"


def spec_error(text: str, cls: type[SpecError] = SpecError) -> SpecError:
    with pytest.raises(cls) as info:
        load_spec_text(textwrap.dedent(text), source="spec.yaml")
    return info.value


def where(err: SpecError) -> tuple[int | None, int | None, str | None]:
    return err.line, err.column, err.field


def test_the_product_example_loads_as_written():
    (p,) = load_spec_text(WORDCOUNT)
    assert p.name == "wordcount"
    assert (p.input.name, p.input.glob, p.input.exclude) == ("books", "/*.txt", ["/drafts/**"])
    assert p.transform.env == {"GREETING": "hello"}
    assert (p.resources.cpu, p.resources.memory, p.resources.disk) == (0.5, 256 * 1024**2, 1024**3)
    assert (p.retries, p.timeout, p.schedule.cron) == (2, 600.0, "0 * * * *")


def test_multiple_documents_load_in_order_and_empty_ones_are_skipped():
    text = ("---\n" + MINIMAL.format(name="first") + "---\n---\n# a comment\n---\n"
            + MINIMAL.format(name="second"))
    assert [p.name for p in load_spec_text(text)] == ["first", "second"]


def test_load_spec_records_source_file_and_base_dir(tmp_path):
    spec = tmp_path / "specs" / "wc.yaml"
    spec.parent.mkdir()
    spec.write_text(MINIMAL.format(name="a") + "---\n" + MINIMAL.format(name="b"))
    for p in load_spec(spec):
        assert p.source_file == str(spec)
        assert p.base_dir == spec.parent
        assert p.input_url == str(spec.parent / "data")
        assert p.input.resolved_url(p.base_dir) == str(spec.parent / "data")


def test_load_spec_text_resolves_against_the_given_base_dir_or_cwd(tmp_path):
    (p,) = load_spec_text(MINIMAL.format(name="a"), source="inline", base_dir=tmp_path)
    assert (p.source_file, p.base_dir, p.input_url) == ("inline", tmp_path, str(tmp_path / "data"))
    (q,) = load_spec_text(MINIMAL.format(name="a"))
    assert (q.source_file, q.base_dir) == ("<string>", Path.cwd())


def test_anchors_and_merge_keys_work():
    text = """\
    pipeline: a
    input: {url: data, glob: &g "/*", exclude: [*g]}
    transform:
      <<: {cmd: [echo, hi], env: {A: 1}}
      env: {A: 2}
    """
    (p,) = load_spec_text(textwrap.dedent(text))
    assert (p.input.glob, p.input.exclude) == ("/*", ["/*"])
    assert (p.transform.cmd, p.transform.env) == (["echo", "hi"], {"A": "2"})


def test_errors_inside_merged_mappings_are_still_located():
    err = spec_error("pipeline: a\ninput: {url: data}\ntransform:\n  <<: {cmd: [echo], envv: {}}\n")
    assert where(err) == (4, 21, "a.transform.envv")


# --- located errors --------------------------------------------------------------------


def test_error_message_names_file_line_column_and_field():
    err = spec_error("""\
    pipeline: wc
    input: {url: data, globb: "*"}
    transform: {cmd: [x]}
    """)
    assert str(err) == "spec.yaml:2:20: wc.input.globb: unknown field 'globb' (did you mean 'glob'?)"
    assert err.file == "spec.yaml" and err.exit_code == 2


def test_malformed_yaml_points_at_the_problem():
    err = spec_error("pipeline: wc\ninput:\n  url: [a, b\ntransform: {}\n")
    assert where(err) == (4, 10, None)
    assert "invalid YAML" in err.detail


def test_tabs_and_bad_indentation_are_malformed_yaml():
    err = spec_error("pipeline: wc\ninput:\n\turl: data\n")
    assert (err.line, err.column) == (3, 1)


def test_unknown_top_level_key_points_at_the_key():
    err = spec_error(MINIMAL.format(name="wc") + "retry: 3\n")
    assert where(err) == (4, 1, "wc.retry")
    assert "unknown field 'retry' (did you mean 'retries'?)" in err.detail


def test_unknown_nested_key_points_at_the_key():
    err = spec_error("""\
    pipeline: wc
    input: {url: data}
    transform:
      cmd: [x]
      environment: {A: b}
    """)
    assert where(err) == (5, 3, "wc.transform.environment")
    assert "did you mean 'env'" in err.detail


def test_unknown_key_without_a_close_match_lists_the_fields():
    err = spec_error(MINIMAL.format(name="wc") + "output: {zzz: 1}\n")
    assert where(err) == (4, 10, "wc.output.zzz")
    assert err.detail == "unknown field 'zzz'; expected one of conflict, publish"


def test_an_unknown_key_is_reported_before_the_missing_field_it_explains():
    err = spec_error("pipeline: wc\ninput: {urll: data}\ntransform: {cmd: [x]}\n")
    assert where(err) == (2, 9, "wc.input.urll")
    assert "did you mean 'url'" in err.detail


def test_missing_required_field_points_at_the_parent_mapping():
    err = spec_error("pipeline: wc\ninput:\n  glob: /*\ntransform: {cmd: [x]}\n")
    assert where(err) == (3, 3, "wc.input.url")
    assert err.detail == "field required"
    err = spec_error("pipeline: wc\ninput: {url: data}\n")
    assert where(err) == (1, 1, "wc.transform")


def test_missing_pipeline_name_is_reported_without_prefix():
    err = spec_error("input: {url: data}\ntransform: {cmd: [x]}\n")
    assert where(err) == (1, 1, "pipeline")


def test_wrong_type_points_at_the_value():
    err = spec_error(MINIMAL.format(name="wc") + "retries: three\n")
    assert where(err) == (4, 10, "wc.retries")
    assert err.detail == "expected an integer, got 'three'"
    err = spec_error("pipeline: wc\ninput: data/books\ntransform: {cmd: [x]}\n")
    assert where(err) == (2, 8, "wc.input")
    assert err.detail == "expected a mapping, got 'data/books'"


def test_non_string_keys_point_at_the_key():
    err = spec_error(MINIMAL.format(name="wc") + "selector: {region: eu, 7: x}\n")
    assert where(err) == (4, 24, "wc.selector.7")
    assert err.detail == "keys must be strings, got an integer (7)"


def test_empty_value_points_at_its_key():
    err = spec_error("pipeline: wc\ninput:\ntransform: {cmd: [x]}\n")
    assert where(err) == (2, 1, "wc.input")
    assert err.detail == "expected a mapping, got null"


def test_wrong_type_in_a_list_names_the_index():
    err = spec_error("pipeline: wc\ninput: {url: data}\ntransform:\n  cmd: [echo, {a: 1}]\n")
    assert where(err) == (4, 15, "wc.transform.cmd[1]")


def test_bad_choice_lists_the_options():
    err = spec_error("pipeline: wc\ninput: {url: data}\ntransform:\n  executor: dockr\n  image: x\n")
    assert where(err) == (4, 13, "wc.transform.executor")
    assert err.detail == "expected one of local, docker, wasm, got 'dockr'"


def test_bad_pipeline_name():
    err = spec_error("pipeline: Word Count\ninput: {url: data}\ntransform: {cmd: [x]}\n")
    assert where(err) == (1, 11, "pipeline")
    assert "invalid pipeline name 'Word Count'" in err.detail


def test_bad_duration():
    err = spec_error(MINIMAL.format(name="wc") + "timeout: 10 minutes\n")
    assert where(err) == (4, 10, "wc.timeout")
    assert "invalid duration '10 minutes'" in err.detail


def test_bad_size():
    err = spec_error(MINIMAL.format(name="wc") + "resources:\n  cpu: 1\n  memory: 2GB!\n")
    assert where(err) == (6, 11, "wc.resources.memory")
    assert "invalid size '2GB!'" in err.detail


def test_bad_glob_and_bad_exclude_entry():
    err = spec_error("pipeline: wc\ninput:\n  url: data\n  glob: '/[a'\ntransform: {cmd: [x]}\n")
    assert where(err) == (4, 9, "wc.input.glob")
    assert "unclosed" in err.detail
    err = spec_error("pipeline: wc\ninput:\n  url: data\n  exclude: [/a, '/{b']\ntransform: {cmd: [x]}\n")
    assert where(err) == (4, 17, "wc.input.exclude[1]")


def test_docker_without_image_points_at_the_transform():
    err = spec_error("pipeline: wc\ninput: {url: data}\ntransform:\n  executor: docker\n  cmd: [x]\n")
    assert where(err) == (4, 3, "wc.transform")
    assert err.detail == "the docker executor needs an image"


def test_image_with_the_local_executor_points_at_image():
    err = spec_error("""\
    pipeline: wc
    input: {url: data}
    transform:
      executor: local
      cmd: [x]
      image: busybox
    """)
    assert where(err) == (6, 3, "wc.transform.image")


def test_schedule_with_cron_and_interval():
    err = spec_error(MINIMAL.format(name="wc") + "schedule: {cron: '* * * * *', interval: 60}\n")
    assert where(err) == (4, 11, "wc.schedule")
    assert err.detail == "give exactly one of cron or interval"


def test_pipeline_urls_are_recorded_with_their_location():
    (up, down) = load_spec_text(MINIMAL.format(name="up") + "---\npipeline: down\ninput:\n  cross:\n"
                                "    - {url: data}\n    - {url: 'pipeline://up/parts'}\ntransform: {cmd: [x]}\n")
    assert up.references == [] and down.upstreams == {"up"}
    (ref,) = down.references
    assert (ref.upstream, ref.line, ref.column, ref.field) == ("up", 9, 13, "down.input.cross[1].url")
    assert down.input.cross[1].name == "up"


def test_a_pipeline_reading_its_own_output_is_a_located_error():
    err = spec_error("pipeline: wc\ninput: {url: 'pipeline://wc'}\ntransform: {cmd: [x]}\n")
    assert where(err) == (2, 14, "wc.input.url")
    assert err.detail == "pipeline 'wc' reads its own output"


def test_a_cycle_of_three_pipelines_is_located_at_the_url_that_closes_it():
    text = "".join(f"pipeline: {a}\ninput: {{url: 'pipeline://{b}'}}\ntransform: {{cmd: [x]}}\n---\n"
                   for a, b in (("a", "c"), ("b", "a"), ("c", "b")))
    err = spec_error(text)
    assert where(err) == (6, 14, "b.input.url")  # b reads a closes a -> c -> b -> a
    assert err.detail == "pipelines read each other's outputs in a cycle: a reads c, c reads b, b reads a"


def test_references_to_pipelines_outside_the_file_load_fine():
    (p,) = load_spec_text("pipeline: wc\ninput: {url: 'pipeline://elsewhere'}\ntransform: {cmd: [x]}\n")
    assert p.upstreams == {"elsewhere"} and p.input.name == "elsewhere"


def test_duplicate_pipeline_names():
    err = spec_error(MINIMAL.format(name="wc") + "---\n" + MINIMAL.format(name="wc"))
    assert where(err) == (5, 11, "wc.pipeline")
    assert err.detail == "duplicate pipeline name 'wc' (first defined at line 1)"


def test_duplicate_keys_in_a_mapping():
    err = spec_error("pipeline: wc\ninput:\n  url: a\n  url: b\ntransform: {cmd: [x]}\n")
    assert where(err) == (4, 3, "wc.input.url")
    assert err.detail == "duplicate key 'url' (first at line 3)"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n---\n", "~\n"])
def test_a_file_without_pipelines_is_an_error(text):
    err = spec_error(text)
    assert where(err) == (1, 1, None)
    assert "no pipeline" in err.detail


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "a list"), ("hello\n", "a scalar ('hello')")])
def test_a_document_that_is_not_a_mapping_is_an_error(text, kind):
    err = spec_error(MINIMAL.format(name="wc") + "---\n" + text)
    assert where(err) == (5, 1, None)
    assert err.detail == f"expected a mapping with a 'pipeline' key, got {kind}"


def test_unknown_yaml_tag_is_an_error():
    err = spec_error("pipeline: wc\ninput: !!python/object:os.system {url: x}\ntransform: {cmd: [x]}\n")
    assert (err.line, err.column) == (2, 8)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(missing)
    assert (info.value.file, info.value.line) == (str(missing), None)
    assert info.value.detail == "file does not exist"


def test_a_directory_or_binary_file_is_an_error(tmp_path):
    with pytest.raises(SpecError, match="directory"):
        load_spec(tmp_path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00pipeline")
    with pytest.raises(SpecError, match="UTF-8"):
        load_spec(binary)


@pytest.mark.parametrize("text", [
    "pipeline: [a]\n", "pipeline: 7\ninput: {}\n", "{a: 1, a: 2}", "pipeline: wc\ninput: []\n",
    "pipeline: wc\ninput: {url: x, batch_size: {}}\ntransform: 3\n", ": :\n", "[", "pipeline: wc\n" * 2,
    "pipeline: wc\ninput: {url: 1}\ntransform: {cmd: {}}\nresources: {memory: null}\nenv: 3\n",
    "? [a, b]\n: 1\n", "pipeline: wc\ninput: &a [*a]\n", "pipeline: wc\ntimeout: 2024-01-01\n",
])
def test_garbage_always_raises_a_located_spec_error(text):
    with pytest.raises(SpecError) as info:
        load_spec_text(text, source="g.yaml")
    assert info.value.file == "g.yaml"
    assert str(info.value).startswith("g.yaml")


# --- JSON schema -----------------------------------------------------------------------


def test_committed_schema_file_matches_the_models():
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()
    assert SCHEMA_FILE.read_text() == render()


def test_schema_describes_one_pipeline_document():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "bacalhau-flow pipeline"
    assert schema["required"] == ["pipeline", "input", "transform"]
    assert schema["additionalProperties"] is False
