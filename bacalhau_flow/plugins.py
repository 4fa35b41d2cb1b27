"""Backends found by name, as fsspec finds its filesystems.

A table of built-in names -> "module:Class" with an install hint, extended by entry
points. Classes are imported on first use; a failed import raises the hint.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .errors import BflowError


class NotYetSupportedBackend(BflowError):
    """A backend the product documents but this version does not have yet."""


class Registry:
    def __init__(self, group: str, kind: str, builtin: dict[str, tuple[str | None, str | None]]):
        self.group = group
        self.kind = kind
        self._known: dict[str, tuple[str | None, str | None]] = dict(builtin)
        self._loaded: dict[str, type] = {}
        self._scanned = False

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for ep in entry_points(group=self.group):
            self._known.setdefault(ep.name, (ep.value, None))

    def names(self) -> list[str]:
        self._scan()
        return sorted(self._known)

    def register(self, name: str, target: str | type, hint: str | None = None) -> None:
        if isinstance(target, type):
            self._loaded[name] = target
            self._known[name] = (f"{target.__module__}:{target.__qualname__}", hint)
        else:
            self._known[name] = (target, hint)
            self._loaded.pop(name, None)

    def load(self, name: str) -> type:
        if name in self._loaded:
            return self._loaded[name]
        self._scan()
        if name not in self._known:
            raise BflowError(
                f"unknown {self.kind} {name!r}",
                hint=f"known {self.kind}s: {', '.join(self.names())}",
            )
        target, hint = self._known[name]
        if target is None:
            raise NotYetSupportedBackend(f"the {self.kind} {name!r} is not supported yet", hint=hint)
        module_name, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except ImportError as e:
            raise BflowError(
                f"the {self.kind} {name!r} cannot be loaded: {e}",
                hint=hint or f"install the package that provides {module_name}",
            ) from e
        self._loaded[name] = cls
        return cls
