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
- Errors: nothing at the url -> `InputNotFound`; network trouble, 5xx, timeouts, DNS ->
  `InputUnreachable` after retries (3 attempts); 401/403 and permission errors ->
  `InputUnreachable` (not retryable); an unknown protocol -> `PlanError` whose hint names
  the package to install when fsspec knows it. Nothing from fsspec/aiohttp leaks out raw.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import stat
import sys
import time
from typing import Any, Callable, NamedTuple, TypeVar
from urllib.parse import quote, unquote, urlsplit

from fsspec.core import split_protocol, url_to_fs

from ..errors import BflowError, InputNotFound, InputUnreachable, PlanError

__all__ = ["Entry", "InputRoot", "open_input"]

T = TypeVar("T")

ATTEMPTS = 3  # tries per remote call before a transient error becomes InputUnreachable
BACKOFF_S = (0.2, 0.6)  # sleep after the 1st and 2nd failed attempt
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

    def _basename(self) -> str:
        name = self.root.rstrip("/")
        if self._kind == "http":
            name = unquote(name.split("?", 1)[0].split("#", 1)[0].rstrip("/"))
        return posixpath.basename(name) or "input"


def open_input(url: str) -> InputRoot:
    """Resolve `url` (a local path, file://, memory://, http(s)://, s3://, ...) to its root."""
    protocol = split_protocol(url)[0]
    options: dict[str, Any] = {}
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

    fs_protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if fs_protocol in ("file", "local"):
        return _open_local(url, fs, path)
    if fs_protocol in ("http", "https"):
        return _open_http(url, fs, path)
    info = _call(url, lambda: fs.info(path))
    if info.get("type") == "directory":
        return InputRoot(url, fs, path, is_file=False)
    return InputRoot(url, fs, path, is_file=True, size=info.get("size"))


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


def _scan_local(url: str, root: str, *, with_sizes: bool) -> tuple[list[str], list[str], list[int]]:
    """(dirs, files, file sizes) by os.scandir: directory symlinks are neither followed nor
    listed; regular files and symlinks to them are files; the rest is skipped.
    File sizes cost a stat per file, so they are only read `with_sizes`."""
    dirs: list[str] = []
    files: list[str] = []
    sizes: list[int] = []
    add_dir, add_file, add_size = dirs.append, files.append, sizes.append
    stack = [(root, "")]
    while stack:
        directory, rel = stack.pop()
        try:
            it = os.scandir(directory)
        except OSError as exc:
            raise InputUnreachable(f"{url}: cannot list {rel or '/'} ({_reason(exc)})",
                                   retryable=False) from None
        prefix = rel + "/"
        with it:
            for e in it:
                try:
                    if e.is_file(follow_symlinks=False):  # the common case first
                        follow = False
                    elif e.is_dir(follow_symlinks=False):
                        path = prefix + e.name
                        add_dir(path)
                        stack.append((e.path, path))
                        continue
                    elif e.is_symlink() and e.is_file():  # a link to a file: not a dir, not broken
                        follow = True
                    else:
                        continue
                    if with_sizes:
                        add_size(e.stat(follow_symlinks=follow).st_size)
                    add_file(prefix + e.name)
                except FileNotFoundError:
                    continue  # removed while we listed it
    return dirs, files, sizes


# --- http ------------------------------------------------------------------------------------

def _open_http(url: str, fs: Any, path: str) -> InputRoot:
    from fsspec.asyn import sync

    status, final_url, size = _call(url, lambda: sync(fs.loop, _http_probe, fs, path))
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


async def _http_probe(fs: Any, url: str) -> tuple[int, str, int | None]:
    """(status, final url after redirects, Content-Length); 5xx raises to be retried."""
    import aiohttp

    session = await fs.set_session()
    for method in ("HEAD", "GET"):
        target = fs.encode_url(url) if hasattr(fs, "encode_url") else url
        async with session.request(method, target, allow_redirects=True, **getattr(fs, "kwargs", {})) as r:
            if method == "HEAD" and r.status in (405, 501):
                continue  # the server does not do HEAD
            if r.status >= 500 or r.status in (408, 429):
                r.raise_for_status()
            length = r.headers.get("Content-Length")
            size = int(length) if length and length.isdigit() and not r.headers.get("Content-Encoding") else None
            return r.status, str(r.url), size
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
    found = _call(url, lambda: fs.find(root, withdirs=True, detail=True))
    prefix = root.rstrip("/") + "/"
    out: list[Entry] = []
    for name, info in found.items():
        name = name.rstrip("/")
        if not name.startswith(prefix):
            continue  # the root itself
        is_dir = info.get("type") == "directory"
        out.append(Entry("/" + name[len(prefix):], is_dir, None if is_dir else info.get("size")))
    return out


# --- errors and retries ----------------------------------------------------------------------

def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _classify(url: str, exc: BaseException) -> tuple[BflowError, bool]:
    """The error to raise for `exc`, and whether trying again may help."""
    if isinstance(exc, BflowError):
        return exc, False
    if isinstance(exc, FileNotFoundError):
        return InputNotFound(f"{url}: not found", hint="check the url; it names nothing"), False
    if isinstance(exc, PermissionError):
        return InputUnreachable(f"{url}: permission denied ({_reason(exc)})", retryable=False), False
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(exc, aiohttp.ClientResponseError):
        status = exc.status
        if status in (404, 410):
            return InputNotFound(f"{url}: not found (HTTP {status})", hint="check the url"), False
        transient = status >= 500 or status in (408, 429)
        return InputUnreachable(f"{url}: HTTP {status} {exc.message}".rstrip(), retryable=transient,
                                hint="the server failed; try again later" if transient else None), transient
    transient_types: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError, TimeoutError)
    if aiohttp is not None:
        transient_types += (aiohttp.ClientError,)
    if isinstance(exc, transient_types):
        return InputUnreachable(f"{url}: unreachable ({_reason(exc)})",
                                hint="check that the server is up and the url is right"), True
    return InputUnreachable(f"{url}: cannot list it ({_reason(exc)})", retryable=False), False


def _call(url: str, fn: Callable[[], T]) -> T:
    """Run fn, retrying transient errors; raise only BflowErrors."""
    for attempt in range(ATTEMPTS):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - translated below
            err, transient = _classify(url, exc)
            if not transient or attempt == ATTEMPTS - 1:
                raise err from None
        time.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
    raise AssertionError("unreachable")  # pragma: no cover


async def _call_async(url: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    for attempt in range(ATTEMPTS):
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - translated below
            err, transient = _classify(url, exc)
            if not transient or attempt == ATTEMPTS - 1:
                raise err from None
        await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
    raise AssertionError("unreachable")  # pragma: no cover
