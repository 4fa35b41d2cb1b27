"""Glob -> datums -> shards: pure planning over fsspec filesystems."""

from .datum import Datum, Mount, Shard, cut_into_shards
from .glob import GlobPattern, compile_glob

__all__ = [
    "Datum", "Mount", "Shard", "cut_into_shards",
    "GlobPattern", "compile_glob",
    "Entry", "InputRoot", "open_input",
    "MatchedDatum", "plan_datums", "plan_matches",
]

# ipfs:// reads this machine's content store first, then IPFS gateways through ipfsspec
# (storage/ipfs_fs.py). Registered here, before any input is opened, so planning and staging
# both use it; the class is imported on first use.
import fsspec as _fsspec  # noqa: E402  (~20 ms on top of what a bflow command already loads)

_fsspec.register_implementation("ipfs", "bacalhau_flow.storage.ipfs_fs.IPFSFileSystem", clobber=True)

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
