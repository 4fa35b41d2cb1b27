"""Planning's fast paths (issue 13): a local listing comes sorted, datums are built in bulk, and
`/**` needs no regex; each gives exactly what the plain way gives."""

import copy
import os
import pickle

import pytest

from bacalhau_flow.plan.datum import Datum, Mount
from bacalhau_flow.plan.datums import match_paths, plan_datums, single_datums
from bacalhau_flow.plan.glob import compile_glob
from bacalhau_flow.plan.inputs import open_input

# names whose order as paths differs from their order as names: " " and "-" and "." sort before "/"
NAMES = ["a", "a b", "a-b", "a.txt", "a0", "b", "B", "é", "z~", "_", "!x", "a-", "ab"]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "in"
    for top in ["a", "a b", "a.txt", "b", "é"]:
        for sub in ["a", "a-b", "x"]:
            folder = root / top / sub
            folder.mkdir(parents=True)
            for name in NAMES:
                (folder / name).write_text(name)
    for name in NAMES:
        if not (root / name).exists():
            (root / name).write_text(name)
    (root / "empty").mkdir()
    os.symlink(root / "a.txt" / "x", root / "dirlink")  # a folder link: neither listed nor followed
    os.symlink(root / "b" / "x" / "a", root / "filelink")  # a file link: a file
    return root


def walked(root):
    files, dirs = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else "/" + rel
        dirs += [f"{prefix}/{d}" for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        files += [f"{prefix}/{f}" for f in filenames]
    return dirs, files


def test_local_listing_gives_files_sorted_and_every_folder(tree):
    dirs, files = open_input(str(tree)).list_paths()
    want_dirs, want_files = walked(tree)
    assert files == sorted(want_files)
    assert sorted(dirs) == sorted(want_dirs)
    assert "/filelink" in files and "/dirlink" not in files + dirs


def test_walk_sizes_follow_their_files(tree):
    entries = open_input(str(tree)).walk()
    files = [e for e in entries if not e.is_dir]
    assert [e.path for e in files] == sorted(e.path for e in files)
    assert all(e.size == os.stat(str(tree) + e.path).st_size for e in files)


@pytest.mark.parametrize("glob, exclude", [("/**", []), ("/**", ["/a b/**", "/*.txt"]), ("/*/*/*", []),
                                           ("/*", []), ("/a*/x/*", ["**/a-*"]), ("/**/a", [])])
def test_plan_datums_equals_the_plain_way(tree, glob, exclude):
    """What plan_datums gives, against matching every listed path with `match` and sorting."""
    root = open_input(str(tree))
    pattern, excludes = compile_glob(glob), [compile_glob(x) for x in exclude]
    dirs, files = root.list_paths()
    hits = match_paths(pattern, list(reversed(dirs)), list(reversed(files)))  # order must not matter
    kept = [p for p, is_dir, _ in hits if not any(x.matches(p, is_dir) for x in excludes)]
    assert plan_datums("in", root, glob, exclude) == [Datum.single("in", p) for p in kept]


def test_every_file_glob_selects_every_file_and_no_folder():
    pattern = compile_glob("/**")
    assert pattern.select(["/a", "/b/c"], False) == ["/a", "/b/c"]
    assert pattern.select(["/a", "/b"], True) == []
    assert compile_glob("/**/*.txt").select(["/a.txt", "/a.csv"], False) == ["/a.txt"]  # not the shortcut


def test_single_datums_are_the_same_datums():
    built = single_datums("in", ["/a", "/b/c"])
    assert built == [Datum.single("in", "/a"), Datum.single("in", "/b/c")]
    assert type(built[0]) is Datum and built[0].mounts == (Mount("in", "/a"),)
    assert built[1].to_json() == {"in": ["/b/c"]}


MOUNT_LISTS = [
    [("a", "/x")], [("a", "/x"), ("b", "/y")], [("a", "/x"), ("a", "/z")], [("a", "/x "), ("b", "/")],
    [("a", "/x/y")], [("ab", "/")], [("a", "/x"), ("b", "/y"), ("c", "/z")], [("b", "/")],
]


def test_flat_datums_order_hash_and_copy_as_their_mounts():
    """A Datum is stored flat (input, path, ...): it must sort, compare and hash as the tuple of
    its Mounts did, and copy and pickle back to itself."""
    nested = [tuple(Mount(*m) for m in mounts) for mounts in MOUNT_LISTS]
    datums = [Datum(mounts) for mounts in nested]
    assert [d.mounts for d in datums] == nested
    assert [d.mounts for d in sorted(datums)] == sorted(nested)
    assert len(set(datums + [Datum(m) for m in nested])) == len(nested)
    assert [Datum.from_json(d.to_json()) for d in datums] == datums
    assert copy.deepcopy(datums) == datums and pickle.loads(pickle.dumps(datums)) == datums
    assert type(pickle.loads(pickle.dumps(datums[1]))) is Datum
    assert repr(datums[0]) == "Datum((Mount(input='a', path='/x'),))"
