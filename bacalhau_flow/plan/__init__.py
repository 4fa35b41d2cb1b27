"""Glob -> datums -> shards: pure planning over fsspec filesystems."""

from .datum import Datum, Mount, Shard, cut_into_shards
from .glob import GlobPattern, compile_glob

__all__ = [
    "Datum", "Mount", "Shard", "cut_into_shards",
    "GlobPattern", "compile_glob",
    "Entry", "InputRoot", "open_input",
    "MatchedDatum", "plan_datums", "plan_matches",
]

# The listing modules are imported only when one of these names is used.
_LAZY = {
    "Entry": "inputs", "InputRoot": "inputs", "open_input": "inputs",
    "MatchedDatum": "datums", "plan_datums": "datums", "plan_matches": "datums",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
