"""The pipeline models: defaults, normalised values, and the rules between fields."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from bacalhau_flow.spec import Input, Pipeline, Resources, Transform
from bacalhau_flow.spec.models import Output, Schedule
from bacalhau_flow.spec.values import parse_duration, parse_size

MINIMAL = {"pipeline": "wc", "input": {"url": "data/books"}, "transform": {"cmd": ["true"]}}


def pipeline(**changes) -> Pipeline:
    return Pipeline.model_validate({**MINIMAL, **changes})


def error_types(exc: ValidationError) -> list[str]:
    return [e["type"] for e in exc.errors()]


def test_minimal_pipeline_gets_the_documented_defaults():
    p = pipeline()
    assert p.name == p.pipeline == "wc"
    assert p.description is None
    assert (p.input.name, p.input.glob, p.input.exclude, p.input.batch_size) == ("books", "/", [], 1)
    t = p.transform
    assert (t.executor, t.image, t.module, t.entrypoint, t.stdin, t.env) == (
        "local", None, None, "_start", None, {})
    assert p.resources == Resources(cpu=0.1, memory=256 * 1024**2, disk=1024**3, gpu=0)
    assert p.selector == {}
    assert (p.network, p.retries, p.timeout, p.schedule, p.reprocess) == ("none", 0, None, None, "changed")
    assert p.output.conflict == "error"


def test_fields_keep_the_order_of_the_product_spec():
    assert list(Pipeline.model_fields) == [
        "pipeline", "description", "input", "transform", "resources", "selector", "network",
        "retries", "timeout", "output", "schedule", "reprocess"]
    assert list(Input.model_fields) == ["name", "url", "glob", "exclude", "batch_size", "join_on", "outer_join",
                                        "group_by"]
    assert list(Transform.model_fields) == [
        "executor", "image", "module", "entrypoint", "fuel", "cmd", "stdin", "env", "secrets"]
    assert list(Resources.model_fields) == ["cpu", "memory", "disk", "gpu"]


def test_pipeline_built_in_code_resolves_against_cwd():
    p = pipeline()
    assert p.source_file == "<string>"
    assert p.base_dir == Path.cwd()
    assert p.input_url == os.path.join(os.getcwd(), "data", "books")


@pytest.mark.parametrize("model", [Pipeline, Input, Transform, Resources, Output, Schedule])
def test_every_model_forbids_unknown_keys(model):
    assert model.model_config["extra"] == "forbid"


@pytest.mark.parametrize("name", ["Wordcount", "-wc", "word count", "a" * 64, "", "wc.1"])
def test_bad_pipeline_names_are_rejected(name):
    with pytest.raises(ValidationError):
        pipeline(pipeline=name)


@pytest.mark.parametrize("name", ["wc", "0", "a" * 63, "word_count-2"])
def test_good_pipeline_names_are_accepted(name):
    assert pipeline(pipeline=name).name == name


# --- input -------------------------------------------------------------------------------


@pytest.mark.parametrize("url, name", [
    ("data/books", "books"),
    ("data/books/", "books"),
    ("./data/books/./", "books"),
    ("../books", "books"),
    ("books.csv", "books.csv"),
    ("/abs/path/books", "books"),
    ("file:///abs/books/", "books"),
    ("https://example.com/y/z.csv", "z.csv"),
    ("https://example.com/y/z.csv?version=2", "z.csv"),
    ("https://example.com/", "example.com"),
    ("ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
     "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"),
    ("ipfs://bafyabc/docs/readme.md", "readme.md"),
    ("s3://bucket", "bucket"),
    ("s3://bucket/prefix/", "prefix"),
    ("memory://corpus", "corpus"),
])
def test_input_name_defaults_to_the_last_segment_of_the_url(url, name):
    assert Input(url=url).name == name


def test_explicit_input_name_wins():
    assert Input(url="data/books", name="library").name == "library"


@pytest.mark.parametrize("name", ["a/b", ".", "..", ""])
def test_bad_input_names_are_rejected(name):
    with pytest.raises(ValidationError):
        Input(url="data/books", name=name)


@pytest.mark.parametrize("url", [".", "..", "./", "file://."])
def test_url_without_a_usable_segment_is_named_after_the_folder_it_names(url, tmp_path):
    base = tmp_path / "specs" / "here"
    expected = "specs" if url == ".." else "here"
    assert Input.model_validate({"url": url}, context={"base_dir": str(base)}).name == expected
    assert Input(url=url).name == os.path.basename(os.path.abspath(url.removeprefix("file://")))  # cwd
    assert Input(url=url, name="mine").name == "mine"


@pytest.mark.parametrize("url", ["/", "file:///", "/.."])
def test_url_naming_no_folder_needs_an_explicit_name(url):
    with pytest.raises(ValidationError, match="cannot derive an input name from url .*give the input a name"):
        Input(url=url)
    assert Input(url=url, name="root").name == "root"


@pytest.mark.parametrize("url", ["", "ftp://host/x", "gs://bucket/x", "ipfs://", "s3:///"])
def test_empty_urls_and_unknown_schemes_are_rejected(url):
    with pytest.raises(ValidationError):
        Input(url=url)


@pytest.mark.parametrize("url, expected", [
    ("data/books", "/specs/data/books"),
    ("data/books/", "/specs/data/books"),
    ("./data/../books", "/specs/books"),
    ("../shared/x.csv", "/shared/x.csv"),
    ("/abs/books", "/abs/books"),
    ("file:///abs/books", "/abs/books"),
    ("file://localhost/abs/books", "/abs/books"),
    ("file://data/books", "/specs/data/books"),
    ("file:///abs/with%20space", "/abs/with space"),
])
def test_resolved_url_makes_local_paths_absolute(url, expected):
    assert Input(url=url).resolved_url(Path("/specs")) == expected


@pytest.mark.parametrize("url", [
    "https://example.com/data.csv", "http://example.com/x/", "ipfs://bafyabc/path",
    "s3://bucket/prefix", "memory://corpus"])
def test_resolved_url_leaves_remote_urls_alone(url):
    assert Input(url=url).resolved_url("/specs") == url


def test_pipeline_url_defaults_the_input_name_to_the_upstream_and_resolves_to_its_output():
    sub = Input(url="pipeline://split/parts")
    assert sub.name == "split"
    assert sub.resolved_url("/specs") == "pipeline://split/parts"  # not resolved yet: as written
    assert sub.resolved_url("/specs", {"split": "ipfs://bafyX"}) == "ipfs://bafyX/parts"
    assert Input(url="pipeline://split").resolved_url("/x", {"split": "ipfs://bafyX"}) == "ipfs://bafyX"


@pytest.mark.parametrize("url", ["pipeline://", "pipeline://Bad_Name", "pipeline:///x"])
def test_pipeline_url_needs_a_valid_pipeline_name(url):
    with pytest.raises(ValidationError, match="invalid pipeline name"):
        Input(url=url, name="x")


def test_bad_glob_and_exclude_patterns_are_rejected():
    with pytest.raises(ValidationError, match="unclosed"):
        Input(url="x", glob="/[a")
    with pytest.raises(ValidationError) as info:
        Input(url="x", exclude=["/ok/**", "/{a,b"])
    assert info.value.errors()[0]["loc"] == ("exclude", 1)


@pytest.mark.parametrize("batch_size", [0, -1, True, 1.5, "2"])
def test_batch_size_must_be_a_positive_integer(batch_size):
    with pytest.raises(ValidationError):
        Input(url="x", batch_size=batch_size)


# --- transform ---------------------------------------------------------------------------


def test_executor_defaults_to_docker_when_an_image_is_set():
    assert Transform(image="busybox").executor == "docker"
    assert Transform(cmd=["true"]).executor == "local"


def test_a_command_string_runs_through_sh_c():
    assert Transform(cmd="wc -w *.txt").cmd == ["sh", "-c", "wc -w *.txt"]
    assert Transform(cmd=["sleep", 5]).cmd == ["sleep", "5"]


def test_env_values_are_coerced_to_strings():
    t = Transform(cmd=["true"], env={"N": 3, "RATIO": 0.5, "DEBUG": True, "OFF": False, "S": "x"})
    assert t.env == {"N": "3", "RATIO": "0.5", "DEBUG": "true", "OFF": "false", "S": "x"}


@pytest.mark.parametrize("fields, message", [
    ({"executor": "docker"}, "docker executor needs an image"),
    ({"executor": "wasm"}, "wasm executor needs a module"),
    ({}, "local executor needs a non-empty cmd"),
    ({"executor": "local", "image": "busybox", "cmd": ["x"]}, "image is only used by the docker"),
    ({"image": "busybox", "module": "m.wasm"}, "module is only used by the wasm"),
    ({"cmd": ["x"], "entrypoint": "main"}, "entrypoint is only used by the wasm"),
    ({"cmd": ["x"], "fuel": 1000}, "fuel is only used by the wasm"),
    ({"executor": "wasm", "module": "m.wasm", "cmd": "run it"}, "the wasm executor has no shell"),
    ({"executor": "wasm", "module": "m.wasm", "fuel": 0}, "greater than or equal to 1"),
    ({"executor": "wasm", "module": "ipfs://bafy/m.wasm"}, "unsupported module url scheme 'ipfs'"),
])
def test_each_executor_gets_what_it_needs(fields, message):
    with pytest.raises(ValidationError, match=message):
        Transform.model_validate(fields)


def test_wasm_transform_with_module():
    t = Transform(executor="wasm", module="hello.wasm", entrypoint="main")
    assert (t.module, t.entrypoint, t.fuel, t.cmd) == ("hello.wasm", "main", None, [])
    assert Transform(executor="wasm", module="m.wasm", fuel=10**9).fuel == 10**9


@pytest.mark.parametrize("module, resolved", [
    ("hello.wasm", "/specs/hello.wasm"),
    ("../mods/hello.wasm", "/mods/hello.wasm"),
    ("/abs/hello.wasm", "/abs/hello.wasm"),
    ("file:///abs/hello.wasm", "/abs/hello.wasm"),
    ("https://example.org/hello.wasm", "https://example.org/hello.wasm"),
])
def test_wasm_module_paths_resolve_against_the_spec_directory(module, resolved):
    assert Transform(executor="wasm", module=module).resolved_module("/specs") == resolved


# --- durations, sizes, resources, schedule -----------------------------------------------


@pytest.mark.parametrize("value, seconds", [
    (30, 30.0), (1.5, 1.5), ("30", 30.0), ("30s", 30.0), ("10m", 600.0), ("1h", 3600.0),
    ("1h30m", 5400.0), ("500ms", 0.5), ("1d", 86400.0), ("1.5h", 5400.0)])
def test_durations_are_stored_as_seconds(value, seconds):
    assert parse_duration(value) == seconds
    assert pipeline(timeout=value).timeout == seconds


@pytest.mark.parametrize("value", ["10x", "m", "", "1h 30m", "-5s", 0, -1, True, None, [1]])
def test_bad_durations_are_rejected(value):
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value, size", [
    (1024, 1024), ("1024", 1024), ("256Mi", 256 * 1024**2), ("1Gi", 1024**3), ("2Ki", 2048),
    ("1Ti", 1024**4), ("1k", 1000), ("1K", 1000), ("5M", 5 * 10**6), ("1G", 10**9),
    ("2T", 2 * 10**12), ("1.5Gi", 3 * 1024**3 // 2), ("512MiB", 512 * 1024**2)])
def test_sizes_are_stored_as_bytes(value, size):
    assert parse_size(value) == size
    assert Resources(memory=value, disk=value).disk == size


@pytest.mark.parametrize("value", ["12Q", "Mi", "-1Gi", -5, True, "1 Gigabyte"])
def test_bad_sizes_are_rejected(value):
    with pytest.raises(ValueError):
        parse_size(value)


def test_cpu_accepts_millicores_and_rejects_zero():
    assert Resources(cpu="500m").cpu == 0.5
    assert Resources(cpu=2).cpu == 2.0
    for bad in [0, -1, True, "lots"]:
        with pytest.raises(ValidationError):
            Resources(cpu=bad)


def test_schedule_takes_exactly_one_of_cron_and_interval():
    assert Schedule(cron="0 * * * *").cron == "0 * * * *"
    assert Schedule(interval="5m").interval == 300.0
    assert Schedule(interval=300, timezone="UTC").interval == 300.0
    for bad in [{}, {"cron": "0 * * * *", "interval": 60}, {"cron": "every hour"}]:
        with pytest.raises(ValidationError):
            Schedule.model_validate(bad)


@pytest.mark.parametrize("field, value", [
    ("network", "host"), ("reprocess", "never"), ("retries", -1), ("retries", "2"),
    ("output", {"conflict": "overwrite"}), ("selector", {"region": None})])
def test_out_of_range_pipeline_values_are_rejected(field, value):
    with pytest.raises(ValidationError):
        pipeline(**{field: value})
