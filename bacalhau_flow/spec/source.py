"""From a spec file to composed YAML nodes, every problem a located `SpecError`.

- The file is read as bytes and decoded as UTF-8; a bad byte is located (line and column).
- Characters YAML does not allow (a NUL byte: a binary file) are found with one regex
  search before any parsing, and located.
- An empty or comment-only file is one error at 1:1, found without parsing (a 15 MB file of
  comments would otherwise take the pure-Python scanner many seconds).
- Composing uses libyaml's parser (`yaml._yaml.CParser`) when PyYAML was built with it, and
  PyYAML's own `Composer` on its events, so nodes carry the same start marks (0-based line
  and column) as with the pure-Python loader. On malformed YAML a small file is parsed again by the
  pure-Python loader, whose messages and marks the tests (and users) know.
- Nesting deeper than `MAX_DEPTH` collections is refused, located at the collection that goes
  too deep, before anything recurses that far (PyYAML's composer recurses per level).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from yaml.composer import Composer
from yaml.events import MappingStartEvent, SequenceStartEvent, StreamEndEvent
from yaml.nodes import Node
from yaml.resolver import Resolver

from bacalhau_flow.errors import SpecError

MAX_DEPTH = 100  # nested mappings and lists; real specs use about 10
_REPARSE_BELOW = 1024 * 1024  # malformed YAML smaller than this is parsed again in pure Python
_NOT_ALLOWED = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MARKER = re.compile(r"^(?:---|\.\.\.)(?=\s|$)", re.MULTILINE)
_CONTENT_LINE = re.compile(r"^[ \t]*[^\s#]", re.MULTILINE)  # a line that is neither blank nor a comment
NO_PIPELINE = "no pipeline (expected a mapping with a 'pipeline' key)"

try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML without libyaml: the pure-Python parser only
    CParser = None


class TooDeep(yaml.YAMLError):
    """Collections nested more than MAX_DEPTH levels deep."""

    def __init__(self, mark):
        super().__init__(f"nested too deeply (more than {MAX_DEPTH} levels)")
        self.problem_mark = mark


class _DepthLimit:
    """A Composer whose recursion stops at MAX_DEPTH nested collections."""

    _depth = 0

    def compose_node(self, parent, index):
        if not self.check_event(MappingStartEvent, SequenceStartEvent):  # CParser: exact classes
            return Composer.compose_node(self, parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise TooDeep(self.peek_event().start_mark)
            return Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1

    def documents(self):
        """Each document's root node (None for an empty one), one at a time."""
        self.get_event()  # the stream's start
        while not self.check_event(StreamEndEvent):
            yield self.compose_document()
        self.get_event()


class _PureComposer(_DepthLimit, yaml.SafeLoader):
    pass


if CParser is not None:
    class _FastComposer(_DepthLimit, CParser, Composer, Resolver):
        def __init__(self, text: str):
            CParser.__init__(self, text)
            Composer.__init__(self)
            Resolver.__init__(self)
else:  # pragma: no cover - PyYAML without libyaml
    _FastComposer = None


def read_spec_file(path: str | Path) -> str:
    """The text of the spec file at `path`; a SpecError for a missing, unreadable or
    non-UTF-8 file (located at the first bad byte)."""
    source, file = str(path), Path(path)
    if not file.exists():
        raise SpecError("file does not exist", file=source)
    if file.is_dir():
        raise SpecError("is a directory, not a spec file", file=source)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read the file: {exc.strerror}", file=source, line=1, column=1) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[start:exc.start].decode("utf-8", "replace")) + 1
        raise SpecError(f"not a UTF-8 text file ({exc.reason}: byte 0x{data[exc.start]:02x})", file=source,
                        line=data.count(b"\n", 0, exc.start) + 1, column=column,
                        hint="a spec is YAML text in UTF-8") from None


def position(text: str, index: int) -> tuple[int, int]:
    """The 1-based (line, column) of character `index` of `text`."""
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def check_text(text: str, source: str) -> None:
    """Refuse, cheaply and located, text that cannot hold a pipeline: characters YAML does not
    allow, or nothing but blank lines and comments."""
    bad = _NOT_ALLOWED.search(text)
    if bad is not None:
        line, column = position(text, bad.start())
        char = bad.group()
        what = ("a NUL byte: this looks like a binary file, not YAML" if char == "\0"
                else f"character U+{ord(char):04X} is not allowed in YAML")
        raise SpecError(what, file=source, line=line, column=column)
    if _CONTENT_LINE.search(text) is None:
        what = "the file is empty" if not text.strip() else "the file holds only comments"
        raise SpecError(f"{what}: {NO_PIPELINE}", file=source, line=1, column=1)


def complete_before(text: str, line: int) -> int:
    """The 0-based line of the last document marker (`---` or `...`) above 1-based `line`, or
    -1: documents that start above it were ended by it, and are whole."""
    last, at, pos = -1, 0, 0
    for match in _MARKER.finditer(text):
        at += text.count("\n", pos, match.start())
        pos = match.start()
        if at >= line - 1:
            break
        last = at
    return last


def compose(text: str, source: str) -> tuple[list[Node | None], SpecError | None]:
    """The root node of each document of `text` (None for an empty document) up to the first
    malformed one, and the located error for that one (None if all are well-formed)."""
    if _FastComposer is None:
        nodes, exc = _compose_with(_PureComposer, text)
    else:
        nodes, exc = _compose_with(_FastComposer, text)
        if exc is not None and not isinstance(exc, TooDeep) and len(text) < _REPARSE_BELOW:
            nodes, exc = _compose_with(_PureComposer, text)  # its messages and marks, as before
    return nodes, None if exc is None else yaml_error(exc, source)


def _compose_with(loader_class, text: str) -> tuple[list[Node | None], yaml.YAMLError | None]:
    nodes: list[Node | None] = []
    try:
        loader = loader_class(text)
    except yaml.YAMLError as exc:  # the pure-Python reader checks every character first
        return nodes, exc
    try:
        for node in loader.documents():
            nodes.append(node)
    except yaml.YAMLError as exc:
        return nodes, exc
    finally:
        loader.dispose()
    return nodes, None


def yaml_error(exc: yaml.YAMLError, source: str) -> SpecError:
    """Malformed YAML, located at the problem mark (1:1 when it has none)."""
    if isinstance(exc, TooDeep):
        mark = exc.problem_mark
        return SpecError(str(exc), file=source, line=mark.line + 1, column=mark.column + 1,
                         hint="a spec nests a few levels deep; this looks generated or broken")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    if mark is None:
        return SpecError(message, file=source, line=1, column=1)
    return SpecError(message, file=source, line=mark.line + 1, column=mark.column + 1)
