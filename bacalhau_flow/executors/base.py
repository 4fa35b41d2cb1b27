"""The Executor seam: run one shard's command over a prepared work directory.

A node stages the shard's inputs into `inputs_dir/<input name>/<path as in the source>`,
creates an empty `outputs_dir`, and hands an `Execution` to an executor. The executor
runs the command with the view of PRODUCT.md section 2, writes stdout and stderr to the
given files as the command runs (never into memory), and returns how it ended.
A command that exits non-zero is a normal `ExecutionResult`, not an error; the executor
raises `ExecutorError` only when it cannot run the command at all (no such image, a
module that does not compile), and then the message says why and what to do.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

# Folders of the work directory (beside inputs/ and outputs/) that an executor may give the
# command as scratch space: $HOME and $TMPDIR of the local executor. They count toward the
# shard's disk limit like everything else the command writes (network/disk.py).
SCRATCH_DIRS = ("home", "tmp")


@dataclass
class Execution:
    cmd: list[str]
    inputs_dir: Path
    outputs_dir: Path
    stdout_path: Path
    stderr_path: Path
    env: dict[str, str] = field(default_factory=dict)  # BFLOW_* and transform.env, already merged
    stdin: str | None = None
    timeout: float | None = None  # seconds for this attempt
    image: str | None = None  # docker
    module: str | None = None  # wasm: path or URL of the module
    entrypoint: str = "_start"  # wasm: the exported function to call
    fuel: int | None = None  # wasm: fuel units the run may use; None: unmetered
    network: str = "none"  # none | full
    cpu: float | None = None
    memory_bytes: int | None = None
    gpus: list[int] = field(default_factory=list)
    # bytes stdout and stderr may hold together (the shard's disk limit less its inputs): past
    # it an executor that can stops writing them and kills the command (ExecutionResult.cut)
    stream_limit: int | None = None


@dataclass
class ExecutionResult:
    exit_code: int
    timed_out: bool = False
    error: str | None = None  # why it ended, in words, when it did not exit by itself
    cut: tuple[str, int] | None = None  # ("stdout" or "stderr", bytes kept) when a stream hit stream_limit


class Executor(abc.ABC):
    """Runs a command for one shard attempt. Implementations: local, docker, wasm."""

    name: str = "abstract"

    @abc.abstractmethod
    def run(self, execution: Execution) -> ExecutionResult:
        """Run to completion (or timeout). Raises `ExecutorError` if it cannot start."""

    def kill(self) -> None:  # pragma: no cover - optional
        """Stop whatever this executor is running now (cancellation)."""
