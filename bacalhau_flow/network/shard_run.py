"""One attempt of one shard on a node, start to end, in a work directory of its own:
stage inputs, run the executor, store outputs and logs by CID, clean up (the folder is emptied
and kept for a later attempt: network/work_folders.py). Blocking.

The command's environment is `pass_env` (the node's variables its operator passes on, `bflow
node --pass-env`), then `transform.env`, then the shard's opened `secrets`, then the BFLOW_*
variables; the executor adds what it must (the local executor: PATH, HOME, TMPDIR, LANG) and
nothing else of the node's. Local inputs are read only inside `allow_paths` when the node has
them (network/staging.py). Everything the command writes counts toward `resources.disk`
(network/disk.py)."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import BflowError
from ..executors import Execution, Executor
from ..storage import ContentStore
from ..storage.unixfs import MAX_DEPTH, TooDeep
from .messages import ShardRequest, ShardResult
from .disk import OutputWatch, check_inputs, cut_streams, outputs_error, stream_cut_error
from .staging import stage_inputs
from .work_folders import WorkFolders

log = logging.getLogger("bacalhau_flow.node")


def run_shard_attempt(request: ShardRequest, executor: Executor, store: ContentStore, work_root: Path,
                      node_id: str, gpus: list[int] | None = None, *, pass_env: dict[str, str] | None = None,
                      secrets: dict[str, str] | None = None, allow_paths: list[Path] | None = None,
                      cancelled: Callable[[], bool] = lambda: False) -> ShardResult:
    """Run one attempt with the GPUs reserved for it (`gpus`, device indices). Never raises: every way an attempt can end becomes a ShardResult with stdout and
    stderr CIDs, so the requester always gets the logs back. `pass_env`: variables of the node
    given to the command; `secrets`: the shard's own, opened; `allow_paths`: the folders local
    inputs may be read from (None: any); `cancelled`: whether the attempt was cancelled before
    its command started (a kill then finds nothing to kill), checked just before it starts."""
    started = time.time()
    work = work_root / request.job_id / f"{request.shard_index}-{request.attempt}"
    inputs, outputs = work / "inputs", work / "outputs"
    stdout, stderr = work / "stdout", work / "stderr"

    def result(state, exit_code=None, error=None, outputs_cid=None, retryable=False) -> ShardResult:
        return ShardResult(
            job_id=request.job_id, shard_index=request.shard_index, shard_id=request.shard_id,
            attempt=request.attempt, node=node_id, state=state, exit_code=exit_code, error=error,
            retryable=retryable, outputs_cid=outputs_cid,
            stdout_cid=_log_cid(store, stdout, b""),
            stderr_cid=_log_cid(store, stderr, f"bflow: {error}\n".encode()),
            started=started, ended=time.time(),
        )

    folders = WorkFolders.at(work_root)
    try:
        folders.take(work)
        limit = request.resources.disk
        try:
            staged = stage_inputs(request, inputs, store, allow_paths=allow_paths)
            check_inputs(request.shard_index, staged, limit)
            allowed = limit - staged  # for all the command writes: outputs, stdout, stderr, scratch
            execution = _execution(request, inputs, outputs, stdout, stderr, gpus or [],
                                   {**(pass_env or {}), **request.transform.env, **(secrets or {})}, allowed)
            if cancelled():
                return result("failed", error="cancelled before it started")
            with OutputWatch(work, allowed, executor.kill) as watch:
                outcome = executor.run(execution)
        except BflowError as e:
            _note(stderr, str(e) + (f"\nbflow: hint: {e.hint}" if e.hint else ""))
            return result("failed", error=str(e), retryable=e.retryable)
        cut = outcome.cut or cut_streams(stdout, stderr, allowed)
        if cut:
            error = stream_cut_error(cut[0], cut[1], staged, limit)
            _note(stderr, error)
            return result("failed", outcome.exit_code, error)
        if watch.exceeded:
            error = outputs_error(request.shard_index, watch.written, allowed, limit, watch.parts)
            _note(stderr, error)
            return result("failed", outcome.exit_code, error)
        try:
            outputs_cid, skipped = store.put_tree_report(outputs)
        except TooDeep as e:  # would fail the same on any node
            error = (f"the outputs of shard {request.shard_index} hold folders nested more than {MAX_DEPTH} deep: "
                     f"not stored ({e.hint})")
            _note(stderr, error)
            return result("failed", outcome.exit_code, error)
        if skipped:
            _note(stderr, "not kept (symlinks and special files are never followed or published): "
                  + ", ".join("/outputs/" + p for p in skipped[:20]) + (" ..." if len(skipped) > 20 else ""))
        if outcome.exit_code == 0 and not outcome.timed_out:
            return result("completed", 0, outputs_cid=outputs_cid)
        return result("failed", outcome.exit_code, outcome.error or f"exit code {outcome.exit_code}", outputs_cid)
    except Exception as e:  # a bug or a broken disk: report it, never lose the shard silently
        log.exception("shard attempt %s failed on node %s", request.attempt_id, node_id)
        _note(stderr, f"node {node_id} failed: {e}")
        return result("failed", error=f"node {node_id} failed: {e}", retryable=True)
    finally:
        folders.give_back(work)


def _log_cid(store: ContentStore, path: Path, missing: bytes) -> str:
    """The CID of the log file at `path` as stored; of `missing` when there is none, or when
    the command put something else than a regular file in its place (a link is not followed,
    a fifo not opened: that read would wait forever). An empty log (most of them) is not
    opened and read: one system call, not six."""
    try:
        info = os.lstat(path)
    except OSError:
        return store.put_bytes(missing)
    if not stat.S_ISREG(info.st_mode):
        return store.put_bytes(missing)
    return store.put_file(path) if info.st_size else store.put_bytes(b"")


def _note(stderr: Path, message: str) -> None:
    """Append a line from bflow itself to the shard's stderr, where the user looks first; not
    when the command put a link, a hard link or something else than a file in its place (the
    error is in the result anyway)."""
    try:
        fd = os.open(stderr, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY,
                     0o644)
    except OSError:
        return
    with open(fd, "a") as f:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            f.write(f"bflow: {message}\n")


def _execution(request: ShardRequest, inputs: Path, outputs: Path, stdout: Path, stderr: Path,
               gpus: list[int], env: dict[str, str], stream_limit: int) -> Execution:
    """`env`: the variables besides the BFLOW_* ones."""
    t = request.transform
    env = dict(env)
    env.update(
        BFLOW_JOB_ID=request.job_id,
        BFLOW_PIPELINE=request.pipeline,
        BFLOW_SHARD_INDEX=str(request.shard_index),
        BFLOW_SHARD_COUNT=str(request.shard_count),
        BFLOW_SHARD_ID=request.shard_id,
    )
    return Execution(
        cmd=t.cmd, inputs_dir=inputs, outputs_dir=outputs, stdout_path=stdout, stderr_path=stderr, env=env,
        stdin=t.stdin, timeout=request.timeout, image=t.image, module=t.module, entrypoint=t.entrypoint,
        fuel=t.fuel, network=request.network,
        cpu=request.resources.cpu, memory_bytes=request.resources.memory, gpus=gpus, stream_limit=stream_limit,
    )
