"""Executors run a shard's command. Found by name through the entry point group
`bacalhau_flow.executors`, imported on first use."""

from __future__ import annotations

from .base import Execution, ExecutionResult, Executor
from .registry import available_executors, get_executor

__all__ = ["Execution", "ExecutionResult", "Executor", "available_executors", "get_executor"]
