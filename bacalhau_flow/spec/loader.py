"""Load pipeline specs from YAML, and turn every problem into a located `SpecError`.

The YAML is composed into nodes first (they carry line and column marks), then built into
Python data and validated by the pydantic models. A pydantic error's `loc` is walked back
through the nodes, so the error names the file, the 1-based line and column of the offending
key or value, and the field path prefixed by the pipeline name (`wordcount.input.glob`).
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Tag, ValidationError
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bacalhau_flow.errors import NotYetSupported, SpecError

from .models import COMBINATORS, NAME_RE, Pipeline, upstream_name, url_scheme

# Which error of several is reported: features we lack, then typos, then bad values,
# then missing fields (often just the consequence of a typo); pydantic's order within each.
_PRIORITY = {"not_yet_supported": 0, "extra_forbidden": 1, "missing": 3}
_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "bool_type": "a boolean", "dict_type": "a mapping",
    "list_type": "a list", "model_type": "a mapping", "model_attributes_type": "a mapping",
}


def load_spec(path: str | Path) -> list[Pipeline]:
    """Every pipeline in the YAML file at `path`, in file order.

    Relative input urls are resolved against the file's directory (`Pipeline.base_dir`).
    """
    source, file = str(path), Path(path)
    if not file.exists():
        raise SpecError("file does not exist", file=source)
    if file.is_dir():
        raise SpecError("is a directory, not a spec file", file=source)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not a UTF-8 text file ({exc.reason})", file=source) from None
    except OSError as exc:
        raise SpecError(f"cannot read the file: {exc.strerror}", file=source) from None
    return load_spec_text(text, source=source, base_dir=file.absolute().parent)


def load_spec_text(text: str, source: str = "<string>", base_dir: Path | None = None) -> list[Pipeline]:
    """Every pipeline in the YAML `text`; `source` names it in errors, `base_dir` defaults to cwd."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    pipelines: list[Pipeline] = []
    first_line: dict[str, int] = {}
    for node in documents:
        if node is None or (isinstance(node, ScalarNode) and node.tag.endswith(":null")):
            continue  # an empty document
        pipeline = _load_document(node, source)
        name_node = _lookup(node, "pipeline")
        line = name_node[1].start_mark.line + 1 if name_node else 0
        if pipeline.name in first_line:
            raise _at(SpecError, f"duplicate pipeline name {pipeline.name!r} "
                      f"(first defined at line {first_line[pipeline.name]})",
                      source, name_node[1] if name_node else node, f"{pipeline.name}.pipeline")
        first_line[pipeline.name] = line
        pipeline.located(source, base)._references = _references(node, pipeline.name, source)
        pipelines.append(pipeline)
    if not pipelines:
        raise SpecError("no pipeline in this file (expected a mapping with a 'pipeline' key)",
                        file=source)
    check_cycles(pipelines)
    return pipelines


# --- pipelines reading each other's outputs (pipeline://) -------------------------------------

@dataclass(frozen=True)
class Reference:
    """One `pipeline://NAME` url of a pipeline, where it stands in the spec file."""

    upstream: str  # NAME: the pipeline whose output is read
    file: str
    line: int
    column: int
    field: str  # e.g. `reduce.input.cross[0].url`

    def error(self, message: str, hint: str | None = None) -> SpecError:
        """A SpecError located at this url."""
        return SpecError(message, file=self.file, line=self.line, column=self.column, field=self.field,
                         hint=hint)


def _references(doc: MappingNode, name: str, source: str) -> list[Reference]:
    """Every `pipeline://` url in a document's input tree, in file order."""
    found: list[Reference] = []

    def visit(node: Node, parts: list[str]) -> None:
        if not isinstance(node, MappingNode):
            return
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                continue
            if key.value == "url" and isinstance(value, ScalarNode) and url_scheme(value.value) == "pipeline":
                mark = value.start_mark
                field = ".".join([name, *parts, "url"]).replace(".[", "[")
                found.append(Reference(upstream_name(value.value), source, mark.line + 1, mark.column + 1,
                                       field))
            elif key.value in COMBINATORS and isinstance(value, SequenceNode):
                for i, member in enumerate(value.value):
                    visit(member, [*parts, key.value, f"[{i}]"])

    pair = _lookup(doc, "input")
    if pair is not None:
        visit(pair[1], ["input"])
    return found


def check_cycles(pipelines: list[Pipeline]) -> None:
    """Raise a SpecError, located at the url that closes it, for a cycle of pipelines of one
    file reading each other's outputs (a pipeline reading its own output is one too)."""
    by_name = {p.name: p for p in pipelines}
    done: set[str] = set()

    def visit(pipeline: Pipeline, path: list[str]) -> None:
        for ref in pipeline.references:
            if ref.upstream not in by_name or ref.upstream in done:
                continue
            if ref.upstream in path:
                cycle = path[path.index(ref.upstream):] + [ref.upstream]
                if len(cycle) == 2:
                    raise ref.error(f"pipeline {pipeline.name!r} reads its own output",
                                    hint="read another pipeline's output, or the data itself")
                reads = ", ".join(f"{a} reads {b}" for a, b in pairwise(cycle))
                raise ref.error(f"pipelines read each other's outputs in a cycle: {reads}",
                                hint="pipelines of one file run in dependency order: remove one of these "
                                     "pipeline:// inputs")
            visit(by_name[ref.upstream], [*path, ref.upstream])
        done.add(pipeline.name)

    for pipeline in pipelines:
        visit(pipeline, [pipeline.name])


def _load_document(node: Node, source: str) -> Pipeline:
    """Validate one composed YAML document as a `Pipeline`."""
    if not isinstance(node, MappingNode):
        raise _at(SpecError, f"expected a mapping with a 'pipeline' key, got {_node_kind(node)}",
                  source, node, None)
    name = _doc_name(node)
    _check_duplicate_keys(node, source, name)
    try:
        data = SafeConstructor().construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    try:
        return Pipeline.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        _, err = min(enumerate(errors), key=lambda ie: (_PRIORITY.get(ie[1]["type"], 2), ie[0]))
        raise _validation_error(err, node, source, name) from None


def _validation_error(err: Any, root: Node, source: str, name: str | None) -> SpecError:
    """A located `SpecError` (or `NotYetSupported`) for one pydantic error."""
    kind, ctx = err["type"], err.get("ctx") or {}
    at = ctx.get("at")  # a key, or a path of keys and indexes, below the error's loc
    loc = tuple(err["loc"]) + (tuple(at) if isinstance(at, (tuple, list)) else (at,) if at else ())
    node, parts, last_key = _walk(root, tuple(step for step in loc if not _is_tag(step)))
    if last_key is not None and (kind in ("extra_forbidden", "invalid_key") or ctx.get("at")):
        node = last_key  # an error about a key; a missing key points at its mapping instead
    field = ".".join(([name] if name else []) + parts).replace(".[", "[")
    cls = NotYetSupported if kind == "not_yet_supported" else SpecError
    return _at(cls, _message(err, loc), source, node, field or None)


def _walk(root: Node, loc: tuple[Any, ...]) -> tuple[Node, list[str], Node | None]:
    """Follow `loc` through the nodes: (deepest node, field path parts, key node of the last step).

    Steps that match nothing (pydantic's union and validator tags) are skipped, except the
    last one, which names a missing or unknown key and so belongs in the field path.
    """
    node, parts, key_node = root, [], None
    for i, step in enumerate(loc):
        if step == "[key]" and key_node is not None:
            node = key_node  # pydantic's marker for an error in a dict key, not its value
        elif isinstance(node, MappingNode) and (pair := _lookup(node, step)) is not None:
            key_node, node = pair
            parts.append(str(step))
            if isinstance(node, ScalarNode) and node.tag.endswith(":null") and not node.value:
                node = key_node  # `key:` with nothing after it: point at the key
        elif isinstance(node, SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            key_node, node = None, node.value[step]
            parts.append(f"[{step}]")
        elif i == len(loc) - 1:
            key_node = None
            parts.append(f"[{step}]" if isinstance(step, int) else str(step))
    return node, parts, key_node


def _lookup(node: Node, key: Any) -> tuple[Node, Node] | None:
    """The (key node, value node) of `key` in a mapping node; the last one wins, as in YAML."""
    found = None
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == str(key):
                found = (k, v)
    return found


def _message(err: Any, loc: tuple[Any, ...]) -> str:
    """A message saying what was expected, for one pydantic error."""
    kind, ctx, given = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "field required"
    if kind == "invalid_key" or loc[-1] == "[key]":
        return f"keys must be strings, got {_describe(given)}"
    if kind == "extra_forbidden":
        key, allowed = str(loc[-1]), _fields_at(loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1) or [
            f for f in allowed if min(len(f), len(key)) >= 3 and (key.startswith(f) or f.startswith(key))]
        if close:
            return f"unknown field {key!r} (did you mean {close[0]!r}?)"
        return f"unknown field {key!r}" + (f"; expected one of {', '.join(allowed)}" if allowed else "")
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"expected one of {', '.join(options)}, got {_describe(given)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(given)}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    for bound, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx and kind.startswith(("greater_than", "less_than")):
            return f"must be {op} {ctx[bound]}, got {_describe(given)}"
    return str(err["msg"])


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model that `loc` leads to from `Pipeline` (empty if none).

    Where a field holds one of several models (the input kinds), a union tag in `loc` picks
    one; without a tag, the one with the next step as a field, else the first."""
    models: list[tuple[type[BaseModel], str | None]] = [(Pipeline, None)]
    for step in loc:
        if isinstance(step, int):
            continue  # an index into a list of models
        if _is_tag(step):
            models = [pair for pair in models if pair[1] == step] or models
            continue
        model = next((m for m, _ in models if step in m.model_fields), None)
        if model is None:
            break
        models = _models_in(model.model_fields[step].annotation)
    return list(models[0][0].model_fields) if models else []


def _models_in(annotation: Any, tag: str | None = None) -> list[tuple[type[BaseModel], str | None]]:
    """(model, union tag) of each model a field's annotation can hold, through Optional,
    Union, list and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, tag)]
    if typing.get_origin(annotation) is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        return _models_in(base, next((m.tag for m in meta if isinstance(m, Tag)), tag))
    return [pair for arg in typing.get_args(annotation) for pair in _models_in(arg, tag)]


def _is_tag(step: Any) -> bool:
    """Whether a loc step is a tag of the models' tagged unions (written `<kind>`)."""
    return isinstance(step, str) and step.startswith("<") and step.endswith(">")


def _describe(value: Any) -> str:
    """How a YAML value reads to its author: `a string ('x')`, `a mapping`, `null`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{type(value).__name__} ({value})"


def _node_kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    return f"a scalar ({node.value!r})"


def _doc_name(node: MappingNode) -> str | None:
    """The document's pipeline name when it is a valid one (it prefixes field paths)."""
    pair = _lookup(node, "pipeline")
    value = pair[1] if pair else None
    if isinstance(value, ScalarNode) and value.tag.endswith(":str") and NAME_RE.fullmatch(value.value):
        return value.value
    return None


def _check_duplicate_keys(root: Node, source: str, name: str | None) -> None:
    """YAML silently keeps the last of two equal keys; a spec treats that as an error."""
    seen_nodes: set[int] = set()

    def visit(node: Node, parts: list[str]) -> None:
        if id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                visit(item, [*parts, f"[{i}]"])
        elif isinstance(node, MappingNode):
            first: dict[str, int] = {}
            for k, v in node.value:
                if not isinstance(k, ScalarNode) or k.value == "<<":
                    continue
                if k.value in first:
                    field = ".".join(([name] if name else []) + [*parts, k.value]).replace(".[", "[")
                    raise _at(SpecError, f"duplicate key {k.value!r} (first at line {first[k.value]})",
                              source, k, field)
                first[k.value] = k.start_mark.line + 1
                visit(v, [*parts, k.value])

    visit(root, [])


def _at(cls: type[SpecError], message: str, source: str, node: Node, field: str | None) -> SpecError:
    mark = node.start_mark
    return cls(message, file=source, line=mark.line + 1, column=mark.column + 1, field=field)


def _yaml_error(exc: yaml.YAMLError, source: str) -> SpecError:
    """Malformed YAML, located at the problem mark."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    if mark is None:
        return SpecError(message, file=source)
    return SpecError(message, file=source, line=mark.line + 1, column=mark.column + 1)
