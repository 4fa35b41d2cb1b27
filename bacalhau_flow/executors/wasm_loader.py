"""Where a wasm executor's module comes from, and its compiled form.

Decisions:
- `module` is an absolute (or cwd-relative) local path, a `file://` url, or an `http(s)://`
  url. The spec's relative paths are made absolute before a shard leaves the client
  (`Transform.resolved_module`), so a node never guesses a base directory.
- A url is fetched once per process and kept under `$BFLOW_HOME/cache/wasm/<sha256>.wasm`;
  later shards of the same url, in this process, read the cached copy.
- Modules are known by the SHA-256 of their bytes. A compiled module is kept per process by
  (digest, metered), so a batch of shards compiles each module once. What is kept is the
  serialized machine code: every run gets an engine of its own (so a timeout or a kill
  interrupts exactly one run), and deserializing into it costs a fraction of a millisecond.
- WebAssembly text (`.wat`) is accepted too, as the wasmtime CLI accepts it.
- The module may import only WASI preview 1 (`wasi_snapshot_preview1`).

Everything that stops a module from running at all raises `ExecutorError` with a hint.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import wasmtime

from ..errors import ExecutorError
from ..home import bflow_home

WASI_MODULE = "wasi_snapshot_preview1"
WASM_MAGIC = b"\0asm"
FETCH_TIMEOUT_SECONDS = 60.0

# (sha256, metered) -> (serialized machine code, exported function -> number of parameters)
_compiled: dict[tuple[str, bool], tuple[bytes, dict[str, int]]] = {}
_key_locks: dict[object, threading.Lock] = {}  # one fetch or compile of a thing at a time
_local_digests: dict[tuple[str, int, int], str] = {}  # (path, mtime_ns, size) -> sha256
_url_digests: dict[str, str] = {}  # url -> sha256 of what it served
_lock = threading.Lock()


@dataclass(frozen=True)
class LoadedModule:
    """A module ready to instantiate in `engine`, which belongs to this run alone."""

    name: str  # the module's file name: argv[0]
    digest: str
    engine: wasmtime.Engine
    module: wasmtime.Module
    functions: dict[str, int]  # exported function -> number of parameters


def cache_dir() -> Path:
    return bflow_home() / "cache" / "wasm"


def new_engine(metered: bool) -> wasmtime.Engine:
    """An engine that can be interrupted by epoch, and that counts fuel when `metered`.
    Compiled code only fits an engine of the same configuration, hence the cache key."""
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.consume_fuel = metered
    return wasmtime.Engine(config)


def load_module(ref: str, metered: bool) -> LoadedModule:
    """The module `ref` names, compiled (once per process) and loaded into a fresh engine.
    Raises ExecutorError when it cannot be found, fetched or compiled."""
    name, digest, read = _locate(ref)
    key = (digest, metered)
    with _lock_for(key):
        if key not in _compiled:
            _compiled[key] = _compile(ref, read(), metered)
    serialized, functions = _compiled[key]
    engine = new_engine(metered)
    return LoadedModule(name, digest, engine, wasmtime.Module.deserialize(engine, serialized), functions)


def module_name(ref: str) -> str:
    """The last segment of the path or url: what the module sees as argv[0]."""
    path = urlsplit(ref).path if "://" in ref else ref
    return unquote(path.rstrip("/").rsplit("/", 1)[-1]) or ref


def _lock_for(key: object) -> threading.Lock:
    with _lock:
        return _key_locks.setdefault(key, threading.Lock())


# -- finding the bytes ----------------------------------------------------------------
def _locate(ref: str):
    """(name, sha256, read) where read() returns the module's bytes."""
    scheme = ref.split("://", 1)[0].lower() if "://" in ref else None
    if scheme in ("http", "https"):
        with _lock_for(ref):
            path = _fetched(ref)
        return module_name(ref), path.stem, path.read_bytes
    if scheme == "file":
        path = Path(unquote(urlsplit(ref).path))
    elif scheme is None:
        path = Path(ref).expanduser()
    else:
        raise ExecutorError(f"wasm module {ref!r}: unsupported url scheme {scheme}://",
                            hint="give a local path, a file:// url or an http(s):// url")
    return module_name(ref), _local_digest(path, ref), path.read_bytes


def _local_digest(path: Path, ref: str) -> str:
    try:
        stat = path.stat()
        key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
        if key not in _local_digests:
            _local_digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        return _local_digests[key]
    except FileNotFoundError:
        raise ExecutorError(f"wasm module not found: {path}",
                            hint="a relative module path is relative to the spec file") from None
    except OSError as e:
        raise ExecutorError(f"cannot read wasm module {path}: {e}") from e


def _fetched(url: str) -> Path:
    """The cached copy of `url`, fetching it on the first use in this process."""
    digest = _url_digests.get(url)
    if digest and (cache_dir() / f"{digest}.wasm").exists():
        return cache_dir() / f"{digest}.wasm"
    cache_dir().mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=cache_dir(), prefix=".fetch-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as body:
            while chunk := body.read(1 << 20):
                sha.update(chunk)
                out.write(chunk)
        final = cache_dir() / f"{sha.hexdigest()}.wasm"
        os.replace(tmp, final)
    except urllib.error.HTTPError as e:
        raise ExecutorError(f"cannot fetch wasm module {url}: HTTP {e.code} {e.reason}",
                            retryable=e.code >= 500) from e
    except (urllib.error.URLError, OSError) as e:
        raise ExecutorError(f"cannot fetch wasm module {url}: {getattr(e, 'reason', e)}", retryable=True) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _url_digests[url] = sha.hexdigest()
    return final


# -- compiling ------------------------------------------------------------------------
def _compile(ref: str, data: bytes, metered: bool) -> tuple[bytes, dict[str, int]]:
    """The serialized machine code of the module, and its exported functions."""
    try:
        binary = data if data.startswith(WASM_MAGIC) else wasmtime.wat2wasm(data.decode())
        module = wasmtime.Module(new_engine(metered), binary)
    except (wasmtime.WasmtimeError, UnicodeDecodeError) as e:
        reason = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ExecutorError(
            f"wasm module {module_name(ref)} does not compile: {reason}",
            hint="give a WebAssembly module built for WASI preview 1 (e.g. cargo build "
                 "--target wasm32-wasip1); components (WASI preview 2) are not supported") from e
    for imp in module.imports:
        if imp.module != WASI_MODULE:
            raise ExecutorError(
                f"wasm module {module_name(ref)} imports {imp.module}.{imp.name}, which the wasm executor "
                f"does not provide", hint=f"only WASI preview 1 imports ({WASI_MODULE}) are available")
    functions = {e.name: len(e.type.params) for e in module.exports if isinstance(e.type, wasmtime.FuncType)}
    return bytes(module.serialize()), functions
