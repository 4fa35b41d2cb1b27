"""Glob patterns for datums (PRODUCT.md section 3), compiled to Python regular expressions.

Syntax, matched against `/`-separated paths relative to the input root that start with `/`:

==========  =====================================================================
``*``       any run of characters except ``/`` (possibly empty)
``?``       one character except ``/``
``[abc]``   one character of the class; ranges ``[a-z]``; ``[!abc]`` / ``[^abc]``
            negate it; ``]`` right after ``[`` (or ``[!``) is literal; a class
            never matches ``/``
``{a,b}``   one of the alternatives; alternatives may nest and may contain ``/``
``**``      any run of characters, ``/`` included; ``/**/`` also matches a single
            ``/`` (zero directories). A path is only matched *through* ``**`` when
            it is a file: ``**`` never matches directories, so ``/**`` is every
            file exactly once
``( )``     a capture group (Pachyderm's ``join_on: "$1"``); groups are numbered
            by their opening parenthesis, from 1
``\\x``      the character ``x`` literally (e.g. ``\\(`` for a ``(`` in a file name)
==========  =====================================================================

Everything else matches itself. ``,`` is only special directly inside ``{ }``; a ``]``
outside a class is literal. The pattern ``/`` matches the root only: wildcards never
match the empty path segment of the root.

Normalisation: the pattern gets a leading ``/`` and loses trailing ``/`` (``/`` itself
stays ``/``). Bad patterns (empty, unclosed ``[``, ``{`` or ``(``, an unmatched ``}`` or
``)``, a ``/`` inside ``[...]``, a reversed range, a trailing ``\\``) raise ``ValueError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

__all__ = ["GlobPattern", "compile_glob", "normalise_pattern"]

_NEVER = "(?!)"  # a regex atom that matches nothing


def normalise_pattern(pattern: str) -> str:
    """The pattern with trailing `/` removed and a leading `/` added where it has none.

    A pattern whose every alternative already starts with `/` (e.g. ``{/a,/b}``) counts as
    having one. ``/`` itself stays ``/``. An escaped ``\\/`` at the end is kept.
    """
    return _normalise(pattern)[0]


def _normalise(pattern: str) -> tuple[str, list[_Token]]:
    if not isinstance(pattern, str):
        raise ValueError(f"glob pattern must be a string, not {type(pattern).__name__}")
    if pattern == "":
        raise ValueError("glob pattern is empty; use '/' for the whole input")
    stripped = pattern
    while len(stripped) > 1 and stripped.endswith("/") and not _escaped_at(stripped, len(stripped) - 1):
        stripped = stripped[:-1]
    tokens = _tokenise(stripped)
    if not _rooted(tokens, 0):
        stripped, tokens = "/" + stripped, [_Token("lit", "/"), *tokens]
    return stripped, tokens


def _rooted(tokens: list[_Token], i: int) -> bool:
    """Whether every way of matching from token i starts with a `/`."""
    if i >= len(tokens):
        return False
    tok = tokens[i]
    if tok.kind == "lit":
        return tok.text == "/"
    if tok.kind == "open_group":
        return _rooted(tokens, i + 1)
    if tok.kind != "open_alt":
        return False
    depth, starts = 0, [i + 1]
    for j in range(i + 1, len(tokens)):
        kind = tokens[j].kind
        if kind == "open_alt":
            depth += 1
        elif kind == "close_alt":
            if depth == 0:
                break
            depth -= 1
        elif kind == "sep" and depth == 0:
            starts.append(j + 1)
    return all(_rooted(tokens, s) for s in starts)


def _escaped_at(s: str, i: int) -> bool:
    """Whether s[i] is preceded by an odd number of backslashes."""
    n = 0
    while i - 1 - n >= 0 and s[i - 1 - n] == "\\":
        n += 1
    return n % 2 == 1


@dataclass(frozen=True)
class _Token:
    kind: str  # "lit", "star", "qmark", "class", "dstar", "open_group", "close_group",
    #            "open_alt", "sep", "close_alt"
    text: str = ""  # literal text, or the regex of a class


def _tokenise(pattern: str) -> list[_Token]:
    """Split a pattern into tokens; a bad pattern raises ValueError naming the position."""
    tokens: list[_Token] = []
    stack: list[tuple[str, int]] = []  # ("{" or "(", position) of each open construct
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError(f"glob {pattern!r}: trailing '\\' escapes nothing")
            tokens.append(_Token("lit", pattern[i + 1]))
            i += 2
        elif c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            tokens.append(_Token("dstar" if j - i >= 2 else "star"))
            i = j
        elif c == "?":
            tokens.append(_Token("qmark"))
            i += 1
        elif c == "[":
            regex, i = _parse_class(pattern, i)
            tokens.append(_Token("class", regex))
        elif c == "{":
            stack.append(("{", i))
            tokens.append(_Token("open_alt"))
            i += 1
        elif c == "}":
            if not stack or stack[-1][0] != "{":
                raise ValueError(_unmatched(pattern, i, "}", stack))
            stack.pop()
            tokens.append(_Token("close_alt"))
            i += 1
        elif c == "," and stack and stack[-1][0] == "{":
            tokens.append(_Token("sep"))
            i += 1
        elif c == "(":
            stack.append(("(", i))
            tokens.append(_Token("open_group"))
            i += 1
        elif c == ")":
            if not stack or stack[-1][0] != "(":
                raise ValueError(_unmatched(pattern, i, ")", stack))
            stack.pop()
            tokens.append(_Token("close_group"))
            i += 1
        else:
            tokens.append(_Token("lit", c))
            i += 1
    if stack:
        kind, pos = stack[-1]
        closer = "}" if kind == "{" else ")"
        raise ValueError(f"glob {pattern!r}: unclosed '{kind}' at position {pos} (missing '{closer}')")
    return tokens


def _unmatched(pattern: str, i: int, c: str, stack: list[tuple[str, int]]) -> str:
    msg = f"glob {pattern!r}: unmatched '{c}' at position {i}"
    if stack:
        kind, pos = stack[-1]
        msg += f" (the '{kind}' at position {pos} is still open)"
    return msg + f"; write '\\{c}' for a literal '{c}'"


def _parse_class(pattern: str, start: int) -> tuple[str, int]:
    """Parse `[...]` starting at `start`; return (regex, index after `]`)."""
    i, n = start + 1, len(pattern)
    negate = i < n and pattern[i] in "!^"
    if negate:
        i += 1
    items: list[str] = []  # regex-escaped characters and "-" for ranges
    chars: list[str] = []  # the raw characters, to check ranges
    first = True
    while True:
        if i >= n:
            raise ValueError(f"glob {pattern!r}: unclosed '[' at position {start} (missing ']')")
        c = pattern[i]
        if c == "]" and not first:
            i += 1
            break
        first = False
        if c == "\\":
            if i + 1 >= n:
                raise ValueError(f"glob {pattern!r}: unclosed '[' at position {start} (missing ']')")
            c = pattern[i + 1]
            i += 2
            is_range_dash = False
        else:
            i += 1
            # a "-" between two characters is a range; first or last it is literal
            is_range_dash = c == "-" and bool(chars) and i < n and pattern[i] != "]"
        if c == "/":
            raise ValueError(f"glob {pattern!r}: '[...]' at position {start} cannot contain '/' "
                             "(a class never matches '/')")
        if is_range_dash:
            items.append("-")
            chars.append("-range")
        else:
            if chars and chars[-1] == "-range":
                low = chars[-2]
                if low > c:
                    raise ValueError(f"glob {pattern!r}: reversed range '{low}-{c}' in '[...]' "
                                     f"at position {start}")
            items.append(re.escape(c))
            chars.append(c)
    body = "".join(items)
    # a class never matches "/", even through a range such as [.-0]
    return ("(?:(?!/)[^" + body + "])" if negate else "(?:(?!/)[" + body + "])"), i


def _to_regex(tokens: list[_Token], *, dirs: bool, root: bool) -> str:
    """The regex for files (default), directories (`**` impossible) or the root (no wildcards)."""
    out: list[str] = []
    k = 0
    while k < len(tokens):
        tok = tokens[k]
        k += 1
        if tok.kind == "lit":
            out.append(re.escape(tok.text))
        elif tok.kind == "star":
            out.append(_NEVER if root else "[^/]*")
        elif tok.kind == "qmark":
            out.append(_NEVER if root else "[^/]")
        elif tok.kind == "class":
            out.append(_NEVER if root else tok.text)
        elif tok.kind == "dstar":
            if dirs or root:
                out.append(_NEVER)
            elif _is_lit(tokens, k - 2, "/") and _is_lit(tokens, k, "/"):
                out.append("(?:.*/)?")  # "/**/": zero or more directories, the "/" included
                k += 1
            else:
                out.append(".*")
        else:
            out.append(_STRUCTURE[tok.kind])
    return "".join(out)


_STRUCTURE = {"open_group": "(", "close_group": ")", "open_alt": "(?:", "sep": "|", "close_alt": ")"}


def _is_lit(tokens: list[_Token], k: int, text: str) -> bool:
    return 0 <= k < len(tokens) and tokens[k].kind == "lit" and tokens[k].text == text


class GlobPattern:
    """A compiled glob. `match(path, is_dir)` gives the capture groups, or None."""

    __slots__ = ("pattern", "groups", "_file_re", "_dir_re", "_root_re", "_every_file", "_no_dir")

    def __init__(self, pattern: str, file_re: re.Pattern, dir_re: re.Pattern, root_re: re.Pattern):
        self.pattern = pattern  # the normalised pattern
        self.groups = file_re.groups  # how many capture groups it has
        self._file_re, self._dir_re, self._root_re = file_re, dir_re, root_re
        # `/**`, the glob of "every file": `select` needs no regex then (issue 13)
        self._every_file = file_re.pattern == "/.*"
        self._no_dir = dir_re.pattern == "/" + _NEVER

    @property
    def regex(self) -> str:
        """The regex that files are matched with (for messages and debugging)."""
        return self._file_re.pattern

    def match(self, path: str, is_dir: bool) -> tuple[str, ...] | None:
        """Match a whole path (`/`-separated, starting with `/`; `/` is the root).

        Returns the capture groups (``()`` when the pattern has none; a group that took no
        part in the match, e.g. in an alternative not taken, is ``""``), or None.
        """
        if path == "/":
            rx = self._root_re
        else:
            rx = self._dir_re if is_dir else self._file_re
        m = rx.fullmatch(path)
        if m is None:
            return None
        return tuple(g if g is not None else "" for g in m.groups())

    def select(self, paths: Iterable[str], is_dir: bool) -> list[str]:
        """The paths (all files, or all directories; never the root `/`) that match, in order.

        Much faster than calling `match` per path when the captures are not needed.
        """
        if is_dir and self._no_dir:
            return []
        if not is_dir and self._every_file:  # `/.*`: every path, as they all start with "/"
            return list(paths)
        return list(filter((self._dir_re if is_dir else self._file_re).fullmatch, paths))

    def matches(self, path: str, is_dir: bool) -> bool:
        """Whether the path matches (no captures)."""
        return self.match(path, is_dir) is not None

    def __repr__(self) -> str:
        return f"GlobPattern({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GlobPattern) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)


def compile_glob(pattern: str) -> GlobPattern:
    """Normalise and compile a glob pattern; a bad pattern raises ValueError with the reason."""
    norm, tokens = _normalise(pattern)
    try:
        file_re = re.compile(_to_regex(tokens, dirs=False, root=False), re.DOTALL)
        dir_re = re.compile(_to_regex(tokens, dirs=True, root=False), re.DOTALL)
        root_re = re.compile(_to_regex(tokens, dirs=False, root=True), re.DOTALL)
    except re.error as exc:  # pragma: no cover - the tokeniser should catch everything first
        raise ValueError(f"glob {norm!r}: {exc}") from None
    return GlobPattern(norm, file_re, dir_re, root_re)
