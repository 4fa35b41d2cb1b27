"""Executors by name: built-ins plus the `bacalhau_flow.executors` entry point group."""

from __future__ import annotations

from ..plugins import Registry
from .base import Executor

EXECUTORS = Registry(
    "bacalhau_flow.executors",
    "executor",
    {
        "local": ("bacalhau_flow.executors.local:LocalExecutor", None),
        "docker": (None, "use executor: local for now; docker arrives with the executors release"),
        "wasm": (None, "use executor: local for now; wasm arrives with the executors release"),
    },
)


def get_executor(name: str) -> Executor:
    return EXECUTORS.load(name)()


def available_executors() -> list[str]:
    return EXECUTORS.names()
