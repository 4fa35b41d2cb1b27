"""Errors and retries of remote reads and writes: one rule for planning, staging and publishing.

`is_transient(exc)` says whether the same call may succeed if tried again (network trouble,
timeouts, HTTP 5xx/408/429, an S3 5xx as s3fs reports it); `retry(fn)` runs a call up to
ATTEMPTS times on such errors; `with_retries(url, fn)` also turns what is left into an
InputNotFound / InputUnreachable naming `url`, so nothing from fsspec, aiohttp or botocore
leaks out raw.
"""

from __future__ import annotations

import asyncio
import errno
import sys
import time
from typing import Any, Callable, TypeVar

from ..errors import BflowError, InputNotFound, InputUnreachable

__all__ = ["ATTEMPTS", "BACKOFF_S", "attempts_for", "is_transient", "reason", "retry", "with_retries"]

T = TypeVar("T")

ATTEMPTS = 3  # tries per remote call before a transient error becomes InputUnreachable
BACKOFF_S = (0.2, 0.6)  # sleep after the 1st and 2nd failed attempt
SELF_RETRYING = ("s3", "s3a")  # protocols whose filesystem retries by itself (s3fs over botocore)


def attempts_for(fs: Any) -> int:
    """Tries per call on the fsspec filesystem `fs`: 1 for local files and for filesystems
    that retry by themselves (another layer of retries would multiply the wait), else ATTEMPTS."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return 1 if protocol in ("file", "local", *SELF_RETRYING) else ATTEMPTS

# OSErrors that no second try can mend (the rest, e.g. EIO as s3fs gives for a 5xx, are retried)
_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
                     errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EINVAL}


def reason(exc: BaseException) -> str:
    """`Type: message` of an exception, for one line of an error."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _botocore_errors() -> Any:
    return sys.modules.get("botocore.exceptions")


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same call again may help: network trouble, timeouts, 5xx, 408, 429."""
    if isinstance(exc, BflowError):
        return False
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(exc, aiohttp.ClientResponseError):
        return exc.status >= 500 or exc.status in (408, 429)
    if isinstance(exc, OSError):
        return exc.errno not in _PERMANENT_ERRNOS and not isinstance(
            exc, (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError))
    transient_types: tuple[type[BaseException], ...] = (asyncio.TimeoutError, TimeoutError)
    if aiohttp is not None:
        transient_types += (aiohttp.ClientError,)
    botocore = _botocore_errors()
    if botocore is not None:
        transient_types += (botocore.HTTPClientError, botocore.ConnectionError)
    return isinstance(exc, transient_types)


def _classify(url: str, exc: BaseException) -> BflowError:
    """The error to raise for `exc`, an error of a call about `url`."""
    if isinstance(exc, BflowError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return InputNotFound(f"{url}: not found", hint="check the url; it names nothing")
    if isinstance(exc, PermissionError):
        return InputUnreachable(f"{url}: permission denied ({reason(exc)})", retryable=False)
    transient = is_transient(exc)
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(exc, aiohttp.ClientResponseError):
        status = exc.status
        if status in (404, 410):
            return InputNotFound(f"{url}: not found (HTTP {status})", hint="check the url")
        return InputUnreachable(f"{url}: HTTP {status} {exc.message}".rstrip(), retryable=transient,
                                hint="the server failed; try again later" if transient else None)
    botocore = _botocore_errors()
    if botocore is not None and isinstance(exc, (botocore.NoCredentialsError, botocore.PartialCredentialsError)):
        return InputUnreachable(f"{url}: no usable credentials ({reason(exc)})", retryable=False,
                                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
    if transient:
        return InputUnreachable(f"{url}: unreachable ({reason(exc)})",
                                hint="check that the server is up and the url is right")
    return InputUnreachable(f"{url}: cannot read it ({reason(exc)})", retryable=False)


def retry(fn: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """Run fn; after a transient error (`is_transient`) run it again, `attempts` times in all,
    sleeping BACKOFF_S between tries. The last error is raised as it is."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - re-raised unless a retry may help
            if attempt == attempts - 1 or not is_transient(exc):
                raise
        time.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
    raise AssertionError("unreachable")  # pragma: no cover


def with_retries(url: str, fn: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """`retry(fn)`, raising only BflowErrors (InputNotFound, InputUnreachable) that name `url`."""
    try:
        return retry(fn, attempts)
    except Exception as exc:  # noqa: BLE001 - translated
        raise _classify(url, exc) from None


async def _call_async(url: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    for attempt in range(ATTEMPTS):
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - translated below
            if not is_transient(exc) or attempt == ATTEMPTS - 1:
                raise _classify(url, exc) from None
        await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
    raise AssertionError("unreachable")  # pragma: no cover
