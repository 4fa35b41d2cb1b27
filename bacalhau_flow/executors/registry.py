"""Executors by name: built-ins plus the `bacalhau_flow.executors` entry point group."""

from __future__ import annotations

from ..plugins import Registry
from .base import Executor

EXECUTORS = Registry(
    "bacalhau_flow.executors",
    "executor",
    {
        "local": ("bacalhau_flow.executors.local:LocalExecutor", None),
        "docker": ("bacalhau_flow.executors.docker:DockerExecutor", None),
        "wasm": ("bacalhau_flow.executors.wasm:WasmExecutor", None),
    },
)


def get_executor(name: str) -> Executor:
    return EXECUTORS.load(name)()


def available_executors() -> list[str]:
    return EXECUTORS.names()
