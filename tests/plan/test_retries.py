"""The one retry rule: which errors are worth a second try, and what the user is told."""

from __future__ import annotations

import errno

import aiohttp
import botocore.exceptions
import pytest

from bacalhau_flow.errors import InputNotFound, InputUnreachable
from bacalhau_flow.plan import retries
from bacalhau_flow.plan.retries import is_transient, retry, with_retries


def http_error(status: int) -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(None, (), status=status, message="x")


@pytest.mark.parametrize("exc, transient", [
    (OSError(errno.EIO, "an S3 5xx as s3fs reports it"), True),
    (ConnectionResetError(), True),
    (TimeoutError(), True),
    (http_error(503), True),
    (http_error(429), True),
    (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), True),
    (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), True),
    (FileNotFoundError("gone"), False),
    (PermissionError("no"), False),
    (OSError(errno.ENOSPC, "disk full"), False),
    (NotADirectoryError("a file is in the way"), False),
    (http_error(404), False),
    (http_error(403), False),
    (botocore.exceptions.NoCredentialsError(), False),
    (ValueError("a bug"), False),
])
def test_only_errors_a_second_try_can_mend_are_transient(exc, transient):
    assert is_transient(exc) is transient


def test_retry_tries_transient_errors_up_to_the_limit_and_raises_the_last(monkeypatch):
    monkeypatch.setattr(retries, "BACKOFF_S", (0.0, 0.0))
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("again")
        return "ok"

    assert retry(flaky) == "ok" and len(calls) == 3
    calls.clear()

    def down():
        calls.append(1)
        raise ConnectionResetError("still down")

    with pytest.raises(ConnectionResetError, match="still down"):
        retry(down, attempts=2)
    assert len(calls) == 2


def test_permanent_errors_are_not_retried():
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("nope")

    with pytest.raises(InputNotFound, match="s3://b/k: not found"):
        with_retries("s3://b/k", missing)
    assert len(calls) == 1


def test_missing_credentials_say_which_variables_to_set():
    def no_creds():
        raise botocore.exceptions.NoCredentialsError()

    with pytest.raises(InputUnreachable, match="no usable credentials") as info:
        with_retries("s3://b/k", no_creds)
    assert "AWS_ACCESS_KEY_ID" in info.value.hint and not info.value.retryable
