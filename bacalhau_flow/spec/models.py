"""Pydantic models of one pipeline document (PRODUCT.md section 1, single-input form).

Every model forbids unknown keys. Values that a YAML author writes loosely (durations such
as "10m", sizes such as "256Mi", a command as one string) are normalised by the types in
`values`, so the rest of the product sees seconds as floats, sizes as bytes and commands
as argument lists.

Validators raise `ValueError` for a bad value, or `PydanticCustomError` with a `ctx["at"]`
naming the key the error is about, which the loader uses to point at that key's line.
Documented features that are not implemented yet raise the error type `not_yet_supported`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union
from urllib.parse import unquote, urlsplit

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PrivateAttr, Tag,
                      ValidationInfo, WithJsonSchema, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from .values import Command, Cpu, Duration, GlobStr, Size, StrMap, compiled_glob, excerpt, no_default

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SCHEMES = ("file", "http", "https", "ipfs", "s3", "memory", "pipeline")
COMBINATORS = ("cross", "union", "join", "group")
_URL_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def url_scheme(url: str) -> str | None:
    """The lower-cased scheme of `url`, or None for a plain local path."""
    match = _URL_SCHEME_RE.match(url)
    return match.group(1).lower() if match else None


def _file_url_path(url: str) -> str:
    """`file:///abs/x` -> `/abs/x`; `file://rel/x` (no host) -> `rel/x`."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc in ("", "localhost"):
        return path
    return unquote(parts.netloc) + path


def _batch_size(value: Any) -> Any:
    """A whole number of datums per shard, 1 or more, or `auto` (plan/batching.py decides)."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        shown = excerpt(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) \
            else repr(value)
        raise ValueError(f"expected a number of datums per shard (1 or more) or auto, got {shown}")
    if value < 1:
        raise ValueError(f"must be 1 or more (or auto), got {value}")
    return value


BatchSize = Annotated[Union[int, Literal["auto"]], BeforeValidator(_batch_size),
                      WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"const": "auto"}]})]


# --- the models ---------------------------------------------------------------------------


class Input(_Model):
    """Where a pipeline's data comes from and how it is cut into datums."""

    name: str = Field("", description="Mount name; default: the last segment of url.",
                      json_schema_extra=no_default)
    url: str = Field(description="Relative path (to the spec file), file://, http(s)://, "
                                 "ipfs://CID[/path], s3://bucket/prefix, memory:// or "
                                 "pipeline://NAME (the latest completed output of pipeline NAME).")
    glob: str = Field("/", description="Which files or directories are datums (section 3).")
    exclude: list[GlobStr] = Field(default_factory=list,
                                   description="Datums matching any of these globs are dropped.")
    batch_size: BatchSize = Field(1, description="Datums per shard (top-level input only), or auto: "
                                                    "chosen from the datums and the nodes (section 3).")
    join_on: str | None = Field(None, description="Members of a join only: the key, from the glob's "
                                                  "( ) groups, e.g. '$1' or '$1-$2'.")
    outer_join: bool = Field(False, strict=True, description="Members of a join only: keep this input's "
                                                              "datums whose key has no partner.")
    group_by: str | None = Field(None, description="Members of a group only: the key, e.g. '$1'.")

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        url = data.get("url")
        if "name" not in data and isinstance(url, str) and url.strip():
            base_dir = (info.context or {}).get("base_dir") or os.getcwd()
            name = _default_name(url) or _folder_name(url, base_dir)
            if not name:
                raise PydanticCustomError("input_name", "cannot derive an input name from url {url}: "
                                          "give the input a name (name: data)", {"url": excerpt(url), "at": "url"})
            data = {**data, "name": name}
        return data

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if not url.strip():
            raise ValueError("url must not be empty")
        scheme = url_scheme(url)
        if scheme == "pipeline":
            upstream = upstream_name(url)
            if not NAME_RE.fullmatch(upstream):
                raise ValueError(f"invalid pipeline name {upstream!r} in {url!r}: expected "
                                 "pipeline://<name>[/path], the name as in another pipeline's `pipeline:`")
        if scheme is not None and scheme not in SCHEMES:
            raise ValueError(f"unsupported url scheme {scheme!r}: expected a path or one of "
                             + ", ".join(f"{s}://" for s in SCHEMES))
        if scheme not in (None, "file") and not url.split("://", 1)[1].strip("/"):
            raise ValueError(f"url {url!r} names nothing after {scheme}://")
        return url

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not name:
            raise ValueError("the input name must not be empty")
        if "/" in name or name in (".", ".."):
            raise ValueError(f"invalid input name {name!r}: must not contain '/' or be '.' or '..'")
        return name

    @field_validator("glob")
    @classmethod
    def _check_glob(cls, pattern: str) -> str:
        return compiled_glob(pattern)

    def resolved_url(self, base_dir: Path | str, upstreams: dict[str, str] | None = None) -> str:
        """The url with local paths made absolute against `base_dir` (the spec's directory).

        A relative path and a `file://` url become an absolute local path (no scheme);
        `pipeline://NAME[/path]` becomes `upstreams[NAME]` (the `ipfs://CID` of that
        pipeline's output, see flow/dag.py) plus the path, and stays as it is when NAME is
        not in `upstreams`; http(s), ipfs, s3 and memory urls are returned unchanged.
        """
        scheme = url_scheme(self.url)
        if scheme == "pipeline":
            resolved = (upstreams or {}).get(upstream_name(self.url))
            if resolved is None:
                return self.url
            path = self.url.split("://", 1)[1].partition("/")[2].strip("/")
            return resolved.rstrip("/") + (f"/{path}" if path else "")
        if scheme is None:
            path = self.url
        elif scheme == "file":
            path = _file_url_path(self.url)
        else:
            return self.url
        return os.path.abspath(os.path.join(base_dir, os.path.expanduser(path)))

    def tree(self, base_dir: Path | str, upstreams: dict[str, str] | None = None):
        """This input as a `plan.combinators.Leaf`, its url resolved against `base_dir`
        (and `upstreams`, for a pipeline:// url)."""
        from bacalhau_flow.plan.combinators import Leaf

        return Leaf(self.name, self.resolved_url(base_dir, upstreams), self.glob, tuple(self.exclude),
                    self.join_on, self.outer_join, self.group_by)


class _Combined(_Model):
    """An input combining other inputs (Pachyderm's input combinators)."""

    keyword: ClassVar[str] = ""  # the YAML key holding the members
    batch_size: BatchSize = Field(1, description="Datums per shard (top-level input only), or auto: "
                                                    "chosen from the datums and the nodes (section 3).")

    @property
    def members(self) -> list[InputNode]:
        return getattr(self, self.keyword)

    def tree(self, base_dir: Path | str, upstreams: dict[str, str] | None = None):
        """This input as a `plan.combinators` tree, urls resolved against `base_dir`."""
        from bacalhau_flow.plan import combinators

        return getattr(combinators, self.keyword.capitalize())([m.tree(base_dir, upstreams)
                                                                for m in self.members])


class CrossInput(_Combined):
    keyword: ClassVar[str] = "cross"
    cross: list[InputNode] = Field(min_length=1, description="Every combination of one datum of each input.")


class UnionInput(_Combined):
    keyword: ClassVar[str] = "union"
    union: list[InputNode] = Field(min_length=1, description="The datums of each input, one after another.")


class JoinInput(_Combined):
    keyword: ClassVar[str] = "join"
    join: list[InputNode] = Field(min_length=1, description="Datums whose join_on keys are equal, combined.")


class GroupInput(_Combined):
    keyword: ClassVar[str] = "group"
    group: list[InputNode] = Field(min_length=1, description="One datum per group_by key, holding all its files.")


def _input_kind(data: Any) -> str:
    """Which input model a mapping is: the combinator key it holds, else a single input."""
    if isinstance(data, dict):
        kind = next((key for key in COMBINATORS if key in data), "input")
    else:
        kind = getattr(data, "keyword", "input")
    return f"<{kind}>"  # tags are written <...>: the loader leaves them out of field paths


InputNode = Annotated[
    Union[Annotated[Input, Tag("<input>")], Annotated[CrossInput, Tag("<cross>")],
          Annotated[UnionInput, Tag("<union>")], Annotated[JoinInput, Tag("<join>")],
          Annotated[GroupInput, Tag("<group>")]],
    Discriminator(_input_kind),
]
for _model in (CrossInput, UnionInput, JoinInput, GroupInput):
    _model.model_rebuild()


def upstream_name(url: str) -> str:
    """The pipeline a `pipeline://NAME[/path]` url reads from: NAME."""
    return url.split("://", 1)[1].split("/", 1)[0]


def _default_name(url: str) -> str:
    """The last non-empty, non-`.` segment of a url's path (or its host, if it has no path);
    for `pipeline://NAME[/path]`, the pipeline's name."""
    scheme = url_scheme(url)
    if scheme == "pipeline":
        return upstream_name(url)
    if scheme is None:
        path = url
    elif scheme == "file":
        path = _file_url_path(url)
    else:
        path = url.split("://", 1)[1].split("?", 1)[0].split("#", 1)[0]
    segments = [s for s in path.replace("\\", "/").split("/") if s not in ("", ".", "..")]
    return segments[-1] if segments else ""


def _folder_name(url: str, base_dir: str | Path) -> str:
    """For a local url with no name in it (`.`, `..`, `./`): the real name of the folder it
    names, resolved against the spec's directory (empty for `/`)."""
    if url_scheme(url) not in (None, "file"):
        return ""
    path = _file_url_path(url) if url_scheme(url) == "file" else url
    return os.path.basename(os.path.abspath(os.path.join(base_dir, os.path.expanduser(path))))


class Transform(_Model):
    """What runs on each shard, and with which executor."""

    executor: Literal["local", "docker", "wasm"] = Field(
        "local", description="local | docker | wasm; default: docker when image is set, else local.",
        json_schema_extra=no_default)
    image: str | None = Field(None, description="Container image (docker only).")
    module: str | None = Field(None, description="Path or URL of the WebAssembly module (wasm only).")
    entrypoint: str = Field("_start", description="Exported function the wasm executor calls.")
    fuel: int | None = Field(None, ge=1, strict=True,
                             description="Wasm only: fuel units a shard may use (about one per instruction).")
    cmd: Command = Field(default_factory=list,
                         description="Command and arguments; a single string runs via `sh -c`.")
    stdin: str | None = Field(None, description="Text piped to the command's standard input.")
    env: StrMap = Field(default_factory=dict, description="Extra environment variables.")
    secrets: StrMap = Field(default_factory=dict, description=(
        "Environment variables whose values are secret: NAME: env:VAR | file:PATH | prefect:BLOCK. Read on "
        "the requester at dispatch, sealed to the node that runs the shard; never stored or logged."))

    @field_validator("secrets")
    @classmethod
    def _check_secrets(cls, secrets: dict[str, str]) -> dict[str, str]:
        for name, source in secrets.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"secret name {name!r} is not an environment variable name")
            kind, _, where = source.partition(":")
            if kind not in ("env", "file", "prefect") or not where:
                raise ValueError(f"secret {name}: {source!r} is not env:VAR, file:PATH or prefect:BLOCK")
        return secrets

    @model_validator(mode="before")
    @classmethod
    def _default_executor(cls, data: Any) -> Any:
        if isinstance(data, dict) and "executor" not in data:
            data = {**data, "executor": "docker" if data.get("image") is not None else "local"}
        if isinstance(data, dict) and data.get("executor") == "wasm" and isinstance(data.get("cmd"), str):
            raise PydanticCustomError("transform_rule", "the wasm executor has no shell: give cmd as a list "
                                      "of arguments", {"at": "cmd"})
        return data

    @field_validator("module")
    @classmethod
    def _check_module(cls, module: str | None) -> str | None:
        if module is None:
            return None
        if not module.strip():
            raise ValueError("module must not be empty")
        scheme = url_scheme(module)
        if scheme not in (None, "file", "http", "https"):
            raise ValueError(f"unsupported module url scheme {scheme!r}: expected a path, file://, "
                             "http:// or https://")
        return module

    @model_validator(mode="after")
    def _executor_needs(self) -> Transform:
        def fail(message: str, at: str | None = None) -> PydanticCustomError:
            return PydanticCustomError("transform_rule", message, {"at": at} if at else None)

        ex = self.executor
        if ex == "docker" and not self.image:
            raise fail("the docker executor needs an image")
        if ex == "wasm" and not self.module:
            raise fail("the wasm executor needs a module")
        if ex == "local" and not self.cmd:
            raise fail("the local executor needs a non-empty cmd")
        if self.image is not None and ex != "docker":
            raise fail(f"image is only used by the docker executor, but executor is {ex}", "image")
        if self.module is not None and ex != "wasm":
            raise fail(f"module is only used by the wasm executor, but executor is {ex}", "module")
        if "entrypoint" in self.model_fields_set and ex != "wasm":
            raise fail(f"entrypoint is only used by the wasm executor, but executor is {ex}",
                       "entrypoint")
        if self.fuel is not None and ex != "wasm":
            raise fail(f"fuel is only used by the wasm executor, but executor is {ex}", "fuel")
        return self

    def resolved_module(self, base_dir: Path | str) -> str | None:
        """The module with a local path made absolute against `base_dir` (the spec's
        directory), as `Input.resolved_url` does; http(s) urls are returned unchanged."""
        if self.module is None or url_scheme(self.module) in ("http", "https"):
            return self.module
        path = _file_url_path(self.module) if url_scheme(self.module) == "file" else self.module
        return os.path.abspath(os.path.join(base_dir, os.path.expanduser(path)))


class Resources(_Model):
    """What one shard needs from a node; sizes are stored in bytes."""

    cpu: Cpu = Field(0.1, gt=0, description="CPU cores (0.5, or millicores like '500m').")
    memory: Size = Field(256 * 1024**2, gt=0, description="Memory: bytes, or '256Mi', '1G', ...")
    disk: Size = Field(1024**3, description="Disk: bytes, or '1Gi', '500M', ...")
    gpu: int = Field(0, ge=0, strict=True, description="Number of GPUs.")


PUBLISH_PLACEHOLDERS = ("job_id", "pipeline")


class Output(_Model):
    """How shard outputs are merged into one tree, and where that tree is published."""

    conflict: Literal["error", "concat"] = Field(
        "error", description="Two shards writing one path: error, or concat in shard order.")
    publish: str | None = Field(
        None, description="Where the merged outputs are written when the job completed: an fsspec url "
                          "(s3://bucket/prefix/{job_id}, file://...) or a path relative to the spec file; "
                          "placeholders {job_id} and {pipeline}.")

    @field_validator("publish")
    @classmethod
    def _check_publish(cls, url: str | None) -> str | None:
        if url is None:
            return url
        if not url.strip():
            raise ValueError("publish must not be empty")
        import string

        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(url) if name is not None]
        except ValueError:
            raise ValueError(f"unbalanced brace in {url!r}: placeholders are {{job_id}} and {{pipeline}}; "
                             "write {{ or }} for a literal brace") from None
        known = ", ".join(f"{{{p}}}" for p in PUBLISH_PLACEHOLDERS)
        for name, spec, conv in fields:
            if name not in PUBLISH_PLACEHOLDERS or spec or conv:
                shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
                raise ValueError(f"unknown placeholder {shown} in {url!r}: expected {known}")
        scheme = url_scheme(url)
        if scheme is not None and scheme != "file":
            from fsspec.registry import available_protocols

            if scheme not in available_protocols():
                raise ValueError(f"unknown protocol {scheme!r} in {url!r}: expected a local path or an "
                                 "fsspec url such as s3://bucket/prefix")
        return url


class Schedule(_Model):
    """When `bflow deploy` runs the pipeline: a cron expression or a fixed interval."""

    cron: str | None = Field(None, description="Cron expression, e.g. '0 * * * *'.")
    interval: Duration | None = Field(None, description="Seconds (or '5m') between runs.")
    timezone: str | None = Field(None, description="IANA time zone, e.g. 'Europe/Lisbon'.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give exactly one of cron or interval")
        return self

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, cron: str | None) -> str | None:
        if cron is not None and not cron.startswith("@") and len(cron.split()) not in (5, 6):
            raise ValueError(f"invalid cron expression {cron!r}: expected 5 fields, e.g. '0 * * * *'")
        return cron

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, tz: str | None) -> str | None:
        import zoneinfo

        known = zoneinfo.available_timezones() if tz is not None else set()
        if known and tz not in known:  # no tz database on this system: accept any name
            raise ValueError(f"unknown time zone {tz!r}: expected an IANA name like 'Europe/Lisbon'")
        return tz


class Pipeline(_Model):
    """One pipeline document: an input, a transform, and how to run it."""

    pipeline: str = Field(description="Name: [a-z0-9][a-z0-9_-]{0,62}.",
                          json_schema_extra={"pattern": f"^{NAME_RE.pattern}$"})
    description: str | None = Field(None, description="Free text.")
    input: InputNode = Field(description="The pipeline's input: a single input, or cross, union, join "
                                         "or group of inputs.")
    transform: Transform = Field(description="What runs on each shard.")
    resources: Resources = Field(default_factory=Resources, description="Needs of one shard.")
    selector: StrMap = Field(default_factory=dict, description="Only nodes carrying these labels.")
    network: Literal["none", "full"] = Field("none", description="Network access of a shard.")
    retries: int = Field(0, ge=0, strict=True, description="Extra attempts per shard.")
    timeout: Duration | None = Field(None, description="Per shard attempt; seconds or '10m'.")
    output: Output = Field(default_factory=Output, description="How shard outputs are merged.")
    schedule: Schedule | None = Field(None, description="Used by `bflow deploy`.")
    reprocess: Literal["changed", "always"] = Field(
        "changed", description="changed: reuse shards whose inputs and transform are unchanged.")

    _source_file: str = PrivateAttr("<string>")
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _references: list = PrivateAttr(default_factory=list)  # spec.loader.Reference, one per pipeline:// url
    _upstreams: dict = PrivateAttr(default_factory=dict)  # upstream name -> ipfs://CID (flow/dag.py)
    _url_marks: dict = PrivateAttr(default_factory=dict)  # input loc -> (line, column, field) of its url

    @field_validator("input")
    @classmethod
    def _check_input_tree(cls, node: InputNode) -> InputNode:
        """Rules across the input tree: batch_size only on top, join/group keys, unique names."""
        from bacalhau_flow.plan.combinators import InputTreeError, check_tree

        for loc, inner in _nested_inputs(node, ()):
            if loc and "batch_size" in inner.model_fields_set:
                raise PydanticCustomError("input_rule", "batch_size applies to the whole input: set it on "
                                          "the top-level input", {"at": loc + ("batch_size",)})
        try:
            check_tree(node.tree("."))
        except InputTreeError as e:
            raise PydanticCustomError("input_rule", "{detail}", {"detail": e.detail, "at": e.loc}) from None
        return node

    @field_validator("pipeline")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not NAME_RE.fullmatch(name):
            raise ValueError(f"invalid pipeline name {name!r}: expected 1-63 characters of "
                             "a-z, 0-9, '_' and '-', starting with a letter or digit")
        return name

    @property
    def name(self) -> str:
        """The pipeline's name (the `pipeline` key)."""
        return self.pipeline

    @property
    def source_file(self) -> str:
        """The spec file this pipeline was loaded from (`<string>` when built in code)."""
        return self._source_file

    @property
    def base_dir(self) -> Path:
        """The directory relative input urls are resolved against (the spec file's)."""
        return self._base_dir

    def located(self, source_file: str, base_dir: Path) -> Pipeline:
        """Record where this pipeline came from; returns self."""
        self._source_file, self._base_dir = source_file, Path(base_dir)
        return self

    @property
    def references(self) -> list:
        """Where this pipeline reads other pipelines' outputs: a `spec.loader.Reference` per
        `pipeline://` url, located in the spec file (empty when built in code)."""
        return self._references

    @property
    def upstreams(self) -> set[str]:
        """The names of the pipelines this one's `pipeline://` inputs read from."""
        return {upstream_name(leaf.url) for leaf in _leaf_inputs(self.input) if url_scheme(leaf.url) == "pipeline"}

    def resolve_upstreams(self, outputs: dict[str, str]) -> Pipeline:
        """Read `pipeline://NAME` inputs from `outputs[NAME]` (an `ipfs://CID` url); returns self.

        Every plan resolves them first: so here, a local input path of a spec file that does
        not exist is an `InputPathMissing` located at its `url:` line (spec.loader)."""
        from .loader import check_local_inputs

        check_local_inputs(self)
        self._upstreams = dict(outputs)
        return self

    def input_tree(self):
        """The input as a `plan.combinators` tree, local urls made absolute against base_dir,
        pipeline:// urls replaced by what `resolve_upstreams` gave (left as they are if not)."""
        return self.input.tree(self._base_dir, self._upstreams)

    @property
    def input_url(self) -> str:
        """`input.resolved_url(base_dir)`: the input url with local paths made absolute."""
        return self.input.resolved_url(self._base_dir, self._upstreams)


def _leaf_inputs(node: InputNode) -> list[Input]:
    """The single inputs of an input tree, depth first."""
    return [inner for _, inner in _nested_inputs(node, ()) if isinstance(inner, Input)]


def _nested_inputs(node: InputNode, loc: tuple) -> list[tuple[tuple, InputNode]]:
    """(loc below the input, node) of every input in the tree, the top one first."""
    found = [(loc, node)]
    for i, member in enumerate(getattr(node, "members", ())):
        found += _nested_inputs(member, loc + (node.keyword, i))
    return found
