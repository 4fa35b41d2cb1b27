"""Listing an input root over any fsspec filesystem (PRODUCT.md section 3).

`open_input(url)` resolves the url to a filesystem and a root; `InputRoot.walk()` lists every
file and directory under the root, as paths relative to it: `/`-separated, starting with `/`.

Decisions:

- A url naming a directory: the root is that directory; the root itself is not listed.
- A url naming a single FILE: the root acts as a directory holding just that file, so
  `walk()` gives one entry `/<basename>`; glob `/` gives one datum holding the whole input
  and `/*` gives the file. `InputRoot.fs_path("/")` and `fs_path("/<basename>")` are both
  the file.
- Local paths (plain absolute paths and `file://`) are walked with `os.scandir`, not fsspec.
  Directory symlinks are never followed nor listed (no cycles, no data seen twice); file
  symlinks are listed as files; broken symlinks, sockets, fifos and devices are skipped.
  An unreadable subdirectory is an error (`InputUnreachable`), never silently skipped.
- HTTP(S): a url ending in `/`, or one that the server redirects to the same url plus `/`
  (as static servers do for directories), names a directory whose listing is read from
  the links in its HTML (fsspec's HTTPFileSystem); only links to direct children are
  followed (no `..`, no query strings, no other hosts). Any other url is a single file.
  Listed HTTP files have `size=None` (no request per file); a single-file url gets its
  Content-Length. Path segments are URL-decoded (`sp%20ace` is `/sp ace`).
- Any other fsspec protocol (memory://, s3://, ipfs:// once installed): `fs.info` tells
  file from directory, `fs.find(withdirs=True, detail=True)` lists the tree.
- S3 (s3fs): `s3://bucket/prefix` names the "directory" `prefix/`. The endpoint and the
  credentials come from the standard AWS environment (`AWS_ENDPOINT_URL`, honoured by
  botocore, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, ...). A bucket that
  does not exist is `InputNotFound` naming the bucket; a prefix under which no key exists is
  an empty directory (0 datums, as an empty local directory), since S3 has no directories.
- Errors: nothing at the url -> `InputNotFound`; network trouble, 5xx, timeouts, DNS ->
  `InputUnreachable` after retries (3 attempts; 1 for S3, where s3fs and botocore already
  retry); 401/403 and permission errors -> `InputUnreachable` (not retryable); an unknown
  protocol -> `PlanError` whose hint names the package to install when fsspec knows it.
  Nothing from fsspec/aiohttp/botocore leaks out raw.

Staging (network/staging.py) reads through the same root: `InputRoot.subtree(path)` says
which files a datum path holds, `InputRoot.fetch(path, target)` copies one file, both with
the retries above (plan/retries.py: the one retry rule of the product).
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import stat
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urljoin, urlsplit

import fsspec
from fsspec.core import split_protocol, url_to_fs

from ..errors import InputNotFound, InputUnreachable, PlanError
from .local_files import copy_file as _copy_file
from .local_files import scan_local as _scan_local
from .retries import SELF_RETRYING, _call_async, _classify, attempts_for, with_retries
from .retries import reason as _reason

# ipfs:// reads this machine's content store first, then IPFS gateways through ipfsspec
# (storage/ipfs_fs.py). Registered where inputs are opened, so planning, staging and content
# keys all use it, and commands that open no input do not import fsspec for it.
fsspec.register_implementation("ipfs", "bacalhau_flow.storage.ipfs_fs.IPFSFileSystem", clobber=True)

__all__ = ["Entry", "InputRoot", "open_input"]

HTTP_TIMEOUT_S = 120  # per HTTP request
HTTP_CONNECT_TIMEOUT_S = 15


class Entry(NamedTuple):
    """One file or directory under an input root."""

    path: str  # relative to the root, "/"-separated, starting with "/"
    is_dir: bool
    size: int | None  # bytes of a file; None for directories or when not known cheaply


class InputRoot:
    """The directory (or single file) that an input url names, on its fsspec filesystem."""

    def __init__(self, url: str, fs: Any, root: str, *, is_file: bool, size: int | None = None,
                 kind: str = "fsspec"):
        self.url = url
        self.fs = fs  # the fsspec filesystem
        self.root = root  # the root's path on `fs` (a full url for HTTP)
        self.is_file = is_file  # the url names a single file
        self._size = size
        self._kind = kind  # "local", "http" or "fsspec"
        self.attempts = attempts_for(fs)  # tries per call (plan/retries.py)

    def __repr__(self) -> str:
        return f"InputRoot({self.url!r}, {'file' if self.is_file else 'directory'})"

    @property
    def is_local(self) -> bool:
        return self._kind == "local"

    def walk(self) -> list[Entry]:
        """Every file and directory under the root (the root excluded), in no particular order."""
        if self.is_file:
            return [Entry("/" + self._basename(), False, self._size)]
        if self._kind == "local":
            dirs, files, sizes = _scan_local(self.url, self.root, with_sizes=True)
            return [Entry(d, True, None) for d in dirs] + [Entry(f, False, n) for f, n in zip(files, sizes)]
        if self._kind == "http":
            return _walk_http(self.url, self.fs, self.root)
        return _walk_fsspec(self.url, self.fs, self.root)

    def list_paths(self) -> tuple[list[str], list[str]]:
        """(directory paths, file paths) under the root, unsorted: `walk()` without sizes.

        The fast path for planning: on a local tree it costs about one `os.walk`.
        """
        if self._kind == "local" and not self.is_file:
            dirs, files, _ = _scan_local(self.url, self.root, with_sizes=False)
            return dirs, files
        dirs, files = [], []
        for e in self.walk():
            (dirs if e.is_dir else files).append(e.path)
        return dirs, files

    def fs_path(self, path: str) -> str:
        """The path on `fs` of a relative path (`/` is the root itself)."""
        if self.is_file:
            if path in ("/", "/" + self._basename()):
                return self.root
            raise InputNotFound(f"{self.url}: no {path} in a single-file input")
        if path == "/":
            return self.root
        rel = path.lstrip("/")
        if self._kind == "http":
            return self.root + quote(rel, safe="/")  # the root ends in "/"
        return self.root.rstrip("/") + "/" + rel

    def subtree(self, path: str) -> tuple[list[str], list[str]]:
        """(directories, files) that the datum `path` holds, relative to the root: a file gives
        just itself; a directory gives itself, and every directory and file under it.
        Raises InputNotFound when `path` is gone, InputUnreachable after retries."""
        if self.is_file:
            self.fs_path(path)  # checks that the path names the file
            return [], ["/" + self._basename()]
        source = self.fs_path(path)
        if self._kind == "local":
            return self._subtree_local(path, source)
        if self._kind == "http":
            return self._subtree_http(path, source)
        return self._subtree_fsspec(path, source)

    def fetch(self, path: str, target: str | os.PathLike, *, read_only: bool = False) -> int:
        """Copy the file `path` to the local file `target` (its folder must exist); return its
        size. `read_only`: the copy is left mode 0o444. Transient errors are retried; raises
        InputNotFound / InputUnreachable."""
        source = self.fs_path(path)
        if self._kind == "local":
            try:  # local reads are not retried (attempts_for): only an error needs translating
                return _copy_file(source, target, read_only)
            except Exception as exc:  # noqa: BLE001 - translated by the rule of every other read
                where = self.url if path == "/" or self.is_file else _join_url(self.url, path)
                raise _classify(where, exc) from None
        where = self.url if path == "/" or self.is_file else _join_url(self.url, path)
        with_retries(where, lambda: self.fs.get_file(source, os.fspath(target)), attempts=self.attempts)
        if read_only:
            os.chmod(target, 0o444)
        return os.path.getsize(target)

    def _subtree_local(self, path: str, source: str) -> tuple[list[str], list[str]]:
        try:
            st = os.stat(source)
        except FileNotFoundError:
            raise InputNotFound(f"{_join_url(self.url, path)}: no such file or directory") from None
        except OSError as exc:
            raise InputUnreachable(f"{_join_url(self.url, path)}: cannot read it ({_reason(exc)})",
                                   retryable=False) from None
        if not stat.S_ISDIR(st.st_mode):
            return [], [path]
        dirs, files, _ = _scan_local(self.url, source, with_sizes=False)
        base = "" if path == "/" else path
        return [path] + [base + d for d in dirs], [base + f for f in files]

    def _subtree_http(self, path: str, source: str) -> tuple[list[str], list[str]]:
        from fsspec.asyn import sync

        if path != "/":
            where = _join_url(self.url, path)
            # Not following redirects: a directory is a redirect to the url plus "/" (one request)
            status, location, _ = with_retries(
                where, lambda: sync(self.fs.loop, _http_probe, self.fs, source, False), attempts=self.attempts)
            if status in (404, 410):
                raise InputNotFound(f"{where}: not found (HTTP {status})")
            if status >= 400:
                raise InputUnreachable(f"{where}: HTTP {status}", retryable=False)
            if location.split("#", 1)[0] != source + "/":
                return [], [path]  # a file (also one that redirects elsewhere: fetching follows it)
            source += "/"
        entries = sync(self.fs.loop, _walk_http_async, self.url, self.fs, source)
        base = "" if path == "/" else path
        return ([path] + [base + e.path for e in entries if e.is_dir],
                [base + e.path for e in entries if not e.is_dir])

    def _subtree_fsspec(self, path: str, source: str) -> tuple[list[str], list[str]]:
        where = _join_url(self.url, path)
        found = with_retries(where, lambda: self.fs.find(source, withdirs=True, detail=True),
                             attempts=self.attempts)
        bare = source.rstrip("/")
        own = found.get(bare) or found.get(bare + "/")
        if own is not None and own.get("type") != "directory":
            return [], [path]
        if not found:  # an empty directory, or nothing at all
            if path == "/":
                return [path], []  # the root is a directory (open_input said so), e.g. an S3 prefix with no keys
            info = with_retries(where, lambda: self.fs.info(source), attempts=self.attempts)
            return ([path], []) if info.get("type") == "directory" else ([], [path])
        dirs, files = [path], []
        base = "" if path == "/" else path
        for name, info in found.items():
            name = name.rstrip("/")
            if name.startswith(bare + "/"):
                rel = base + "/" + name[len(bare) + 1:]
                (dirs if info.get("type") == "directory" else files).append(rel)
        return dirs, files

    def _basename(self) -> str:
        name = self.root.rstrip("/")
        if self._kind == "http":
            name = unquote(name.split("?", 1)[0].split("#", 1)[0].rstrip("/"))
        return posixpath.basename(name) or "input"


def open_input(url: str, *, store_root: str | None = None) -> InputRoot:
    """Resolve `url` (a local path, file://, memory://, http(s)://, s3://, ...) to its root.
    `store_root`: the content store that `ipfs://` reads first (default $BFLOW_HOME/store)."""
    protocol = split_protocol(url)[0]
    options: dict[str, Any] = {}
    if protocol == "ipfs" and store_root:
        options["store_root"] = store_root
    if protocol in ("http", "https"):
        import aiohttp

        options["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S,
                                                                     sock_connect=HTTP_CONNECT_TIMEOUT_S)}
    try:
        fs, path = url_to_fs(url, **options)
    except ImportError as exc:
        proto = url.split("://", 1)[0]
        raise PlanError(f"{url}: the {proto}:// protocol needs a package that is not installed",
                        hint=str(exc) or f"install the fsspec implementation for {proto}://") from None
    except ValueError as exc:
        if "protocol not known" not in str(exc).lower():
            raise PlanError(f"{url}: cannot open this url ({_reason(exc)})", hint="check the url") from None
        known = "local paths, file://, memory://, http(s)://"
        raise PlanError(f"{url}: unknown protocol {protocol!r}",
                        hint=f"supported here: {known}, and any protocol an installed fsspec "
                             "implementation registers (e.g. s3fs for s3://)") from None
    except Exception as exc:  # noqa: BLE001 - never a raw traceback for a bad url
        raise PlanError(f"{url}: cannot open this url ({_reason(exc)})",
                        hint="check the url; paths are relative to the spec file") from None

    fs_protocol = _protocol(fs)
    if fs_protocol in ("file", "local"):
        return _open_local(url, fs, path)
    if fs_protocol in ("http", "https"):
        return _open_http(url, fs, path)
    attempts = attempts_for(fs)
    fs.invalidate_cache()  # plan what is there now, not what this process listed before
    try:
        info = with_retries(url, lambda: fs.info(path), attempts=attempts)
    except InputNotFound:
        if fs_protocol not in SELF_RETRYING:
            raise
        _check_bucket(url, fs, path)
        return InputRoot(url, fs, path, is_file=False)  # a prefix with no keys: an empty directory
    if info.get("type") == "directory":
        return InputRoot(url, fs, path, is_file=False)
    return InputRoot(url, fs, path, is_file=True, size=info.get("size"))


def _protocol(fs: Any) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def _join_url(url: str, path: str) -> str:
    """The url of a relative path under an input url, for messages."""
    return url.rstrip("/") + path if path != "/" else url


# --- s3 --------------------------------------------------------------------------------------

def _check_bucket(url: str, fs: Any, path: str) -> None:
    """Raise InputNotFound naming the bucket when the bucket of `path` does not exist."""
    bucket = path.split("/", 1)[0]
    try:
        with_retries(url, lambda: fs.call_s3("head_bucket", Bucket=bucket), attempts=1)
    except InputNotFound:
        raise InputNotFound(f"{url}: bucket {bucket!r} does not exist",
                            hint="check the bucket name, and AWS_ENDPOINT_URL when it is not AWS's S3") from None


# --- local -----------------------------------------------------------------------------------

def _open_local(url: str, fs: Any, path: str) -> InputRoot:
    try:
        st = os.stat(path)  # follows a symlink the url itself names
    except FileNotFoundError:
        raise InputNotFound(f"{url}: no such file or directory",
                            hint="check the path; a relative url is relative to the spec file") from None
    except OSError as exc:
        raise InputUnreachable(f"{url}: cannot read it ({_reason(exc)})", retryable=False) from None
    if stat.S_ISDIR(st.st_mode):
        return InputRoot(url, fs, path, is_file=False, kind="local")
    return InputRoot(url, fs, path, is_file=True, size=st.st_size, kind="local")


# --- http ------------------------------------------------------------------------------------

def _open_http(url: str, fs: Any, path: str) -> InputRoot:
    from fsspec.asyn import sync

    status, final_url, size = with_retries(url, lambda: sync(fs.loop, _http_probe, fs, path))
    if status in (404, 410):
        raise InputNotFound(f"{url}: not found (HTTP {status})", hint="check the url") from None
    if status >= 400:
        raise InputUnreachable(f"{url}: HTTP {status}", retryable=False)
    bare = path.split("#", 1)[0]
    if urlsplit(bare).path == "":
        bare += "/"  # http://host is the server's root directory
    if bare.endswith("/") or final_url.split("#", 1)[0] == bare + "/":
        return InputRoot(url, fs, bare if bare.endswith("/") else bare + "/", is_file=False, kind="http")
    return InputRoot(url, fs, path, is_file=True, size=size, kind="http")


async def _http_probe(fs: Any, url: str, follow: bool = True) -> tuple[int, str, int | None]:
    """(status, final url after redirects, Content-Length); 5xx raises to be retried.
    With `follow=False`, a redirect is not followed and its target is returned as the url."""
    import aiohttp

    session = await fs.set_session()
    for method in ("HEAD", "GET"):
        target = fs.encode_url(url) if hasattr(fs, "encode_url") else url
        async with session.request(method, target, allow_redirects=follow, **getattr(fs, "kwargs", {})) as r:
            if method == "HEAD" and r.status in (405, 501):
                continue  # the server does not do HEAD
            if r.status >= 500 or r.status in (408, 429):
                r.raise_for_status()
            final = str(r.url)
            if not follow and 300 <= r.status < 400 and r.headers.get("Location"):
                return r.status, urljoin(final, r.headers["Location"]), None
            length = r.headers.get("Content-Length")
            size = int(length) if length and length.isdigit() and not r.headers.get("Content-Encoding") else None
            return r.status, final, size
    raise aiohttp.ClientError("neither HEAD nor GET is allowed")  # pragma: no cover


def _walk_http(url: str, fs: Any, root: str) -> list[Entry]:
    from fsspec.asyn import sync

    return sync(fs.loop, _walk_http_async, url, fs, root)


async def _walk_http_async(url: str, fs: Any, root: str) -> list[Entry]:
    """Breadth first; each level's directories are listed concurrently."""
    out: list[Entry] = []
    seen = {root}
    level = [(root, "")]
    while level:
        listings = await asyncio.gather(*(_call_async(d, fs._ls, d, detail=True) for d, _ in level))
        nxt: list[tuple[str, str]] = []
        for (dir_url, rel), listing in zip(level, listings):
            for item in listing:
                name = item["name"]
                if not name.startswith(dir_url):
                    continue
                rest = name[len(dir_url):]
                is_dir = rest.endswith("/")
                seg = rest[:-1] if is_dir else rest
                if not seg or "/" in seg or "?" in seg or "#" in seg or seg in (".", ".."):
                    continue  # not a direct child: parent links, sort links, deeper links
                path = rel + "/" + unquote(seg)
                if is_dir:
                    if name in seen:
                        continue
                    seen.add(name)
                    nxt.append((name, path))
                out.append(Entry(path, is_dir, None if is_dir else item.get("size")))
        level = nxt
    return out


# --- any other fsspec filesystem ----------------------------------------------------------------

def _walk_fsspec(url: str, fs: Any, root: str) -> list[Entry]:
    found = with_retries(url, lambda: fs.find(root, withdirs=True, detail=True),
                         attempts=attempts_for(fs))
    prefix = root.rstrip("/") + "/"
    out: list[Entry] = []
    for name, info in found.items():
        name = name.rstrip("/")
        if not name.startswith(prefix):
            continue  # the root itself
        is_dir = info.get("type") == "directory"
        out.append(Entry("/" + name[len(prefix):], is_dir, None if is_dir else info.get("size")))
    return out
