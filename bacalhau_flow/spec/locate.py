"""Pydantic errors walked back to the YAML nodes they are about: file, line, column, field.

A pydantic error's `loc` is followed through the composed nodes (which carry line and column
marks), so the error names the 1-based line and column of the offending key or value and
the field path prefixed by the pipeline name (`wordcount.input.glob`). Messages say what was
expected in plain words, and never quote more than a short excerpt of what the file holds.
"""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any

from pydantic import BaseModel, Tag, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bacalhau_flow.errors import NotYetSupported, SpecError

from .models import Pipeline
from .values import excerpt

_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "int_from_float": "an integer",
    "int_parsing": "an integer", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "a boolean", "bool_parsing": "a boolean", "dict_type": "a mapping",
    "list_type": "a list", "model_type": "a mapping", "model_attributes_type": "a mapping",
}
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
_LONG_MESSAGE = 240


def validation_errors(exc: ValidationError, root: Node, source: str, name: str | None) -> list[SpecError]:
    """A located SpecError for each of pydantic's errors, leaving out a missing field that an
    unknown key right beside it explains (`urll:` is the missing `url:`)."""
    errors = exc.errors()
    explained = set()
    for err in errors:
        if err["type"] == "extra_forbidden" and err["loc"]:
            close = _close_field(str(err["loc"][-1]), _fields_at(tuple(err["loc"][:-1])))
            if close is not None:
                explained.add(_plain(err["loc"][:-1]) + (close,))
    return [_validation_error(err, root, source, name) for err in errors
            if not (err["type"] == "missing" and _plain(err["loc"]) in explained)]


def _plain(loc: Any) -> tuple:
    return tuple(step for step in loc if not _is_tag(step))


def _validation_error(err: Any, root: Node, source: str, name: str | None) -> SpecError:
    """A located `SpecError` (or `NotYetSupported`) for one pydantic error."""
    kind, ctx = err["type"], err.get("ctx") or {}
    at = ctx.get("at")  # a key, or a path of keys and indexes, below the error's loc
    loc = tuple(err["loc"]) + (tuple(at) if isinstance(at, (tuple, list)) else (at,) if at else ())
    node, parts, last_key = walk(root, _plain(loc))
    if last_key is not None and (kind in ("extra_forbidden", "invalid_key") or ctx.get("at")):
        node = last_key  # an error about a key; a missing key points at its mapping instead
    cls = NotYetSupported if kind == "not_yet_supported" else SpecError
    message = _message(err, loc).replace("\r", "\\r").replace("\n", "\\n")  # one line per error
    return at_node(cls, message, source, node, field_path(name, parts))


def field_path(name: str | None, parts: list[str]) -> str | None:
    """`wc.input.cross[0].url` from the pipeline's name (when valid) and the path's parts (a
    long or unprintable key shown as a short excerpt)."""
    shown = [p if len(p) <= 40 and p.isprintable() else excerpt(p, 40) for p in parts]
    return ".".join(([name] if name else []) + shown).replace(".[", "[") or None


def walk(root: Node, loc: tuple[Any, ...]) -> tuple[Node, list[str], Node | None]:
    """Follow `loc` through the nodes: (deepest node, field path parts, key node of the last step).

    Steps that match nothing are skipped, except the last one, which names a missing or
    unknown key and so belongs in the field path.
    """
    node, parts, key_node = root, [], None
    for i, step in enumerate(loc):
        if step == "[key]" and key_node is not None:
            node = key_node  # pydantic's marker for an error in a dict key, not its value
        elif isinstance(node, MappingNode) and (pair := lookup(node, step)) is not None:
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


def lookup(node: Node, key: Any) -> tuple[Node, Node] | None:
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
        return f"keys must be strings, got {describe(given)}"
    if kind == "extra_forbidden":
        key, allowed = str(loc[-1]), _fields_at(loc[:-1])
        close = _close_field(key, allowed)
        if close:
            return f"unknown field {excerpt(key)} (did you mean {close!r}?)"
        return f"unknown field {excerpt(key)}" + (f"; expected one of {', '.join(allowed)}" if allowed else "")
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"expected one of {', '.join(options)}, got {describe(given)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe(given)}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "value_error":
        return shorten(str(ctx.get("error", err["msg"])))
    for bound, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx and kind.startswith(("greater_than", "less_than")):
            return f"must be {op} {ctx[bound]}, got {describe(given)}"
    return shorten(str(err["msg"]))


def _close_field(key: str, allowed: list[str]) -> str | None:
    """The field an unknown key most likely meant (a typo, or a prefix of it), if any."""
    close = difflib.get_close_matches(key, allowed, n=1) or [
        f for f in allowed if min(len(f), len(key)) >= 3 and (key.startswith(f) or f.startswith(key))]
    return close[0] if close else None


def shorten(message: str) -> str:
    """A message with every long quoted value in it cut to a short excerpt."""
    if len(message) <= _LONG_MESSAGE:
        return message
    message = _QUOTED.sub(lambda m: m.group() if len(m.group()) <= 82 else
                          f"{m.group()[:80]}…{m.group()[0]} ({len(m.group()) - 2} characters)", message)
    return message if len(message) <= 2 * _LONG_MESSAGE else f"{message[:_LONG_MESSAGE]} … {message[-80:]}"


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


def describe(value: Any) -> str:
    """How a YAML value reads to its author: `'x'`, `an integer (3)`, `a mapping`, `null`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({excerpt(str(value))[1:-1]})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return excerpt(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{type(value).__name__} ({excerpt(str(value))[1:-1]})"


def node_kind(node: Node) -> str:
    """What a document's root node is, for an error saying it is not a mapping."""
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    return f"a scalar ({excerpt(node.value)})"


def at_node(cls: type[SpecError], message: str, source: str, node: Node, field: str | None,
            hint: str | None = None) -> SpecError:
    """A `cls` error located at `node`'s start mark."""
    mark = node.start_mark
    return cls(message, file=source, line=mark.line + 1, column=mark.column + 1, field=field, hint=hint)
