"""One error tree for the whole product.

Every error a user can cause is a `BflowError`: it carries a one-line message, an
optional hint, and whether trying again can help. The CLI prints `error: <message>`
and `hint: <hint>` and exits with `exit_code`; it never shows a traceback for these.
"""

from __future__ import annotations


class BflowError(Exception):
    """Root of every error bacalhau-flow raises on purpose."""

    exit_code = 1
    retryable = False

    def __init__(self, message: str, *, hint: str | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class SpecError(BflowError):
    """A pipeline spec is malformed: the message names file:line:column and the field path."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ):
        self.file, self.line, self.column, self.field = file, line, column, field
        self.detail = message
        where = file or "<spec>"
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        located = f"{where}: {field + ': ' if field else ''}{message}"
        super().__init__(located, hint=hint)


class NotYetSupported(SpecError):
    """A documented feature that this version does not implement yet."""


class SpecErrors(SpecError):
    """Several spec errors of one file at once: `errors` in line order, one located line each.

    `file`, `line`, `column`, `field` and `detail` are the first error's; the message is every
    error's `file:line:column: field: message`, one per line; `more` counts those left out."""

    def __init__(self, errors: list[SpecError], *, more: int = 0):
        first = errors[0]
        self.errors, self.more = list(errors), more
        self.file, self.line, self.column, self.field = first.file, first.line, first.column, first.field
        self.detail = first.detail
        hints = list(dict.fromkeys(e.hint for e in errors if e.hint))
        if more:
            hints.append(f"{more} more error(s) not shown: fix these first")
        BflowError.__init__(self, "\n".join(e.message for e in errors), hint="; ".join(hints) or None)


class PlanError(BflowError):
    """The inputs of a pipeline cannot be listed or globbed."""

    exit_code = 2


class InputNotFound(PlanError):
    """An input url names nothing."""


class InputPathMissing(SpecError, InputNotFound):
    """A local input path (relative to the spec file, or file://) does not exist: located at its
    `url:` line in the spec, and an `InputNotFound` too."""


class InputUnreachable(PlanError):
    """An input url could not be reached (network, permissions, server error)."""

    retryable = True


class ExecutorError(BflowError):
    """A shard could not be started or run by its executor (not: the command exited non-zero)."""


class StagingError(BflowError):
    """A node could not fetch a shard's inputs."""

    retryable = True


class PublishError(BflowError):
    """A job's outputs could not be written to its `output.publish` url (they stay in the content store)."""


class DiskLimitExceeded(BflowError):
    """A shard's inputs or outputs do not fit in its disk limit (`resources.disk`), or its
    inputs do not fit in the node's free disk."""


class OutputConflict(BflowError):
    """Two shards wrote the same output path and the conflict rule is `error`."""


class ContentError(BflowError):
    """Content does not match its CID, or a CID is not in the store."""


class BlockNotFound(ContentError):
    """A block a DAG needs is not in this content store (another node or gateway may have it)."""


class JobNotFound(BflowError):
    """No job id starts with the given prefix, or more than one does."""


class JobCancelled(BflowError):
    """The job was cancelled (Ctrl-C or `bflow cancel`)."""

    exit_code = 130


class NoNodeCanRun(BflowError):
    """No node in the network could ever run a shard (too large, no matching labels or executor)."""


class JobStoreDamaged(BflowError):
    """The job store's database file ($BFLOW_HOME/jobs.sqlite) is damaged: not a database, or
    malformed. The message names the file; the hint says how to start anew or recover it."""

    exit_code = 2


class JobFailed(BflowError):
    """A job run through the Python API (bacalhau_flow.api.run) did not complete: `job` is its
    record (of several pipelines, the first that did not complete), `jobs` every record."""

    def __init__(self, message: str, *, job, jobs: list, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.job = job
        self.jobs = jobs
