"""Load pipeline specs from YAML, and turn every problem into a located `SpecError`.

The file is read and composed into nodes (`source`: they carry line and column marks), each
document built into Python data and validated by the pydantic models; a pydantic error is
walked back through the nodes (`locate`). Every error of a file is reported at once, in
line order: one `SpecError`, or a `SpecErrors` holding several, each
`file:line:column: pipeline.field: message`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import yaml
from pydantic import ValidationError
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bacalhau_flow.errors import InputPathMissing, SpecError, SpecErrors

from .locate import at_node, field_path, lookup, node_kind, validation_errors, walk
from .models import COMBINATORS, NAME_RE, Input, Pipeline, _nested_inputs, upstream_name, url_scheme
from .source import MAX_DEPTH, NO_PIPELINE, check_text, complete_before, compose, read_spec_file, yaml_error
from .values import excerpt

MAX_ERRORS = 20  # reported at once; the hint counts the rest


def load_spec(path: str | Path) -> list[Pipeline]:
    """Every pipeline in the YAML file at `path`, in file order.

    Relative input urls are resolved against the file's directory (`Pipeline.base_dir`).
    """
    text = read_spec_file(path)
    return load_spec_text(text, source=str(path), base_dir=Path(path).absolute().parent)


def load_spec_text(text: str, source: str = "<string>", base_dir: Path | None = None) -> list[Pipeline]:
    """Every pipeline in the YAML `text`; `source` names it in errors, `base_dir` defaults to cwd.

    Raises a SpecError for one problem, a SpecErrors (a SpecError too) for several."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    check_text(text, source)
    documents, malformed = compose(text, source)
    if malformed is not None:  # a malformed document's content errors are mostly its breakage
        whole = complete_before(text, malformed.line or 1)
        documents = [node for node in documents if node is not None and node.start_mark.line < whole]
    errors: list[SpecError] = []
    pipelines: list[Pipeline] = []
    first_line: dict[str, int] = {}
    for node in documents:
        if node is None or (isinstance(node, ScalarNode) and node.tag.endswith(":null")):
            continue  # an empty document
        pipeline = _load_document(node, source, base, errors)
        if pipeline is None:
            continue
        name_node = lookup(node, "pipeline")
        line = name_node[1].start_mark.line + 1 if name_node else 0
        if pipeline.name in first_line:
            errors.append(at_node(SpecError, f"duplicate pipeline name {pipeline.name!r} "
                                  f"(first defined at line {first_line[pipeline.name]})",
                                  source, name_node[1] if name_node else node, f"{pipeline.name}.pipeline"))
            continue
        first_line[pipeline.name] = line
        pipeline.located(source, base)._references = _references(node, pipeline.name, source)
        pipeline._url_marks = _url_marks(node, pipeline)
        pipelines.append(pipeline)
    if malformed is not None:
        errors.append(malformed)
    if not pipelines and not errors:
        errors.append(SpecError(f"only empty documents: {NO_PIPELINE}", file=source, line=1, column=1))
    try:
        check_cycles(pipelines)
    except SpecError as exc:
        errors.append(exc)
    raise_all(errors)
    return pipelines


def raise_all(errors: list[SpecError]) -> None:
    """Raise the errors, if any, in line order: the one error itself, or a SpecErrors."""
    if not errors:
        return
    unique = list({str(e): e for e in errors}.values())
    unique.sort(key=lambda e: (e.line or 0, e.column or 0))
    if len(unique) == 1:
        raise unique[0]
    raise SpecErrors(unique[:MAX_ERRORS], more=max(0, len(unique) - MAX_ERRORS))


def _load_document(node: Node, source: str, base: Path, errors: list[SpecError]) -> Pipeline | None:
    """Validate one composed YAML document as a `Pipeline`; its errors go to `errors`."""
    if not isinstance(node, MappingNode):
        errors.append(at_node(SpecError, f"expected a mapping with a 'pipeline' key, got {node_kind(node)}",
                              source, node, None))
        return None
    name = _doc_name(node)
    before = len(errors)
    errors += _duplicate_keys(node, source, name)
    try:
        data = SafeConstructor().construct_document(node)
    except yaml.YAMLError as exc:
        errors.append(yaml_error(exc, source))
        return None
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        long = _first_long_number(node)
        errors.append(at_node(SpecError, "a number with too many digits", source, long or node, None))
        return None
    try:
        pipeline = Pipeline.model_validate(data, context={"base_dir": str(base)})
    except ValidationError as exc:
        errors += validation_errors(exc, node, source, name)
        return None
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps documents well below this
        errors.append(at_node(SpecError, f"nested too deeply (more than {MAX_DEPTH} levels)", source, node,
                              name))
        return None
    return pipeline if len(errors) == before else None


def _first_long_number(root: Node) -> Node | None:
    """The first integer scalar too long for Python to read, if any."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode) and node.tag.endswith(":int") and len(node.value) > 4000:
            return node
        if isinstance(node, SequenceNode):
            stack += reversed(node.value)
        elif isinstance(node, MappingNode):
            stack += reversed([n for pair in node.value for n in pair])
    return None


def _doc_name(node: MappingNode) -> str | None:
    """The document's pipeline name when it is a valid one (it prefixes field paths)."""
    pair = lookup(node, "pipeline")
    value = pair[1] if pair else None
    if isinstance(value, ScalarNode) and value.tag.endswith(":str") and NAME_RE.fullmatch(value.value):
        return value.value
    return None


def _duplicate_keys(root: Node, source: str, name: str | None) -> list[SpecError]:
    """YAML silently keeps the last of two equal keys; a spec treats each such key as an error."""
    found: list[SpecError] = []
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
                    message = f"duplicate key {excerpt(k.value)} (first at line {first[k.value]})"
                    found.append(at_node(SpecError, message, source, k, field_path(name, [*parts, k.value])))
                else:
                    first[k.value] = k.start_mark.line + 1
                visit(v, [*parts, k.value])

    visit(root, [])
    return found


# --- local input paths -----------------------------------------------------------------------

def _url_marks(doc: MappingNode, pipeline: Pipeline) -> dict[tuple, tuple[int, int, str | None]]:
    """(line, column, field) of the `url:` value of each single input, by its loc in the tree."""
    pair = lookup(doc, "input")
    marks = {}
    for loc, inner in _nested_inputs(pipeline.input, ()) if pair is not None else ():
        if isinstance(inner, Input):
            node, parts, _ = walk(pair[1], (*loc, "url"))
            marks[loc] = (node.start_mark.line + 1, node.start_mark.column + 1,
                          field_path(pipeline.name, ["input", *parts]))
    return marks


def check_local_inputs(pipeline: Pipeline) -> None:
    """Raise InputPathMissing, located at its `url:` line, for each local input path (relative
    to the spec's directory, or file://) of a loaded spec that does not exist."""
    errors: list[SpecError] = []
    for loc, inner in _nested_inputs(pipeline.input, ()):
        mark = pipeline._url_marks.get(loc)
        if mark is None or not isinstance(inner, Input) or url_scheme(inner.url) not in (None, "file"):
            continue
        path = inner.resolved_url(pipeline.base_dir)
        if not os.path.exists(path):
            line, column, field = mark
            errors.append(InputPathMissing(
                f"input {inner.name!r}: no such file or directory: {excerpt(inner.url)}"
                + (f" ({path})" if len(path) <= 200 else ""),
                file=pipeline.source_file, line=line, column=column, field=field,
                hint=f"a relative url is read from the spec's folder, {pipeline.base_dir}"))
    raise_all(errors)


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
                found.append(Reference(upstream_name(value.value), source, mark.line + 1, mark.column + 1,
                                       field_path(name, [*parts, "url"])))
            elif key.value in COMBINATORS and isinstance(value, SequenceNode):
                for i, member in enumerate(value.value):
                    visit(member, [*parts, key.value, f"[{i}]"])

    pair = lookup(doc, "input")
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
