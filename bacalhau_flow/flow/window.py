"""What one shard shows in the Prefect UI: one log record on its task run per attempt, and
the message of its Failed state.

Decisions:

- One log call per attempt (INFO when it completed, ERROR when it failed): node, datum paths,
  exit code, output CID, and the tails of its stderr and stdout. The tails are read from the
  requester's content store by the result's CIDs (the requester fetched them with the
  outputs), bounded to the last `TAIL_LINES` lines of the last `TAIL_BYTES` bytes each, so a
  shard that printed a gigabyte costs one or two block reads.
- A failed shard's state message is the shard's own error, with its last stderr line: what
  `bflow logs` would show first, never a traceback through Prefect's engine or bflow.
- Nothing here raises: a log that cannot be read (a block this store lacks) is left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import BflowError
from ..network.messages import ShardResult
from ..storage import ContentStore

TAIL_LINES = 20  # per stream, in a shard's log record
TAIL_BYTES = 4096  # read from the end of each stream, at most
DATUM_PATHS = 10  # datum paths named in a log record or a table cell; the rest are counted
MESSAGE_LINE = 300  # characters of stderr in a state message


def tail(content: ContentStore, cid: str | None, lines: int = TAIL_LINES, limit: int = TAIL_BYTES) -> str:
    """The last `lines` lines of the file `cid` within its last `limit` bytes ("" when there
    is none, or it cannot be read here)."""
    from ..storage import dag, unixfs

    if not cid or cid == unixfs.empty_file_cid():
        return ""
    try:
        binary = unixfs.parse_cid(cid)
        size = dag.stat(content, binary).size
        start = max(0, size - limit)
        data = b"".join(dag.read_range(content, binary, start))
    except (BflowError, OSError, ValueError):
        return ""
    text = data.decode("utf-8", errors="replace")
    if start and "\n" in text:
        text = text.split("\n", 1)[1]  # the first line was cut: leave it out
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def datum_paths(datums: list[dict[str, list[str]]], limit: int = DATUM_PATHS) -> str:
    """The paths of a shard's datums, `/a.txt, /b.txt`, input-prefixed (`books:/a.txt`) when
    the datums mount several inputs; past `limit` paths, how many more there are."""
    mounts = [(name, path) for datum in datums for name, paths in datum.items() for path in paths]
    several = len({name for name, _ in mounts}) > 1
    shown = [f"{name}:{path}" if several else path for name, path in mounts[:limit]]
    more = len(mounts) - len(shown)
    return ", ".join(shown) + (f" (and {more} more)" if more > 0 else "")


@dataclass
class ShardReport:
    """One attempt of a shard, as its task run tells it."""

    index: int
    attempt: int
    state: str
    node: str
    exit_code: int | None
    outputs_cid: str | None
    error: str | None
    datums: str
    stdout: str
    stderr: str

    @classmethod
    def of(cls, content: ContentStore, datums: list[dict[str, list[str]]], result: ShardResult) -> "ShardReport":
        return cls(index=result.shard_index, attempt=result.attempt, state=result.state, node=result.node,
                   exit_code=result.exit_code, outputs_cid=result.outputs_cid, error=result.error,
                   datums=datum_paths(datums), stdout=tail(content, result.stdout_cid),
                   stderr=tail(content, result.stderr_cid))

    @property
    def failed(self) -> bool:
        return self.state != "completed"

    def failure_message(self) -> str:
        """`shard 3 failed on node n-1: exit code 1; stderr: odd number 7: failing on purpose`."""
        where = f" on node {self.node}" if self.node else ""
        message = f"shard {self.index} failed{where}: {self.error or 'no reason given'}"
        last = next((line.strip() for line in reversed(self.stderr.splitlines()) if line.strip()), "")
        if last and last not in message:
            message += f"; stderr: {last[:MESSAGE_LINE]}"
        return message

    def log_text(self) -> str:
        """The one log record of this attempt (several lines)."""
        head = self.failure_message() if self.failed else f"shard {self.index} completed on node {self.node}"
        lines = [
            f"{head} (attempt {self.attempt})",
            f"node: {self.node or '-'}",
            f"datums: {self.datums or '-'}",
            f"exit code: {'-' if self.exit_code is None else self.exit_code}",
            f"output CID: {self.outputs_cid or '-'}",
        ]
        for name, text in (("stderr", self.stderr), ("stdout", self.stdout)):
            if text:
                lines.append(f"{name} (last lines):")
                lines += ["  " + line for line in text.splitlines()]
            else:
                lines.append(f"{name}: (empty)")
        return "\n".join(lines)

    def log_to(self, logger: logging.Logger | logging.LoggerAdapter) -> None:
        logger.log(logging.ERROR if self.failed else logging.INFO, self.log_text())
