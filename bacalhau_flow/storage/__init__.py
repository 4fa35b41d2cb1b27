"""Content addressing: kubo-compatible UnixFS CIDs and the on-disk content store."""

from .store import ContentStore, Entry
from .unixfs import (
    CHUNK_SIZE,
    MAX_LINKS,
    DagRef,
    TreeImport,
    bytes_cid,
    file_cid,
    import_file,
    import_tree,
    tree_cid,
)

__all__ = [
    "CHUNK_SIZE",
    "MAX_LINKS",
    "ContentStore",
    "DagRef",
    "Entry",
    "TreeImport",
    "bytes_cid",
    "file_cid",
    "import_file",
    "import_tree",
    "tree_cid",
]
