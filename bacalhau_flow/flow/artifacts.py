"""The artifacts of a job's flow run: a table of its shards and a markdown summary.

Both are created once, when the flow ends (two API calls per flow run, none per shard),
through the flow run's own Prefect client. Keys are `bflow-<pipeline>-shards` (the table) and
`bflow-<pipeline>` (the summary), so the Artifacts page shows each pipeline's latest job and
its history. Every shard of the job has a row, skipped (reused) and cancelled ones too.

Gateway links (`<gateway>/ipfs/<cid>`) use the first gateway of `IPFS_GATEWAY` when one is set
(where this machine reads CIDs from); without one, the summary names the CIDs only.
Creating an artifact never fails a job: an API error is logged on the flow run and left.
"""

from __future__ import annotations

import asyncio
import json
import os
import re

from ..jobs.store import JobRecord, ShardRecord
from ..storage import ContentStore
from .window import datum_paths

STDERR_HEAD = 200  # bytes of a shard's stderr read for its first line


def artifact_key(pipeline: str, suffix: str = "") -> str:
    """`bflow-<pipeline>[-suffix]` in what Prefect allows in a key: lowercase letters, digits, dashes."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"bflow-{pipeline}-{suffix}".lower()).strip("-")
    return re.sub(r"-{2,}", "-", name)


def gateway_url() -> str | None:
    """The first gateway of IPFS_GATEWAY (comma- or space-separated), without a trailing slash."""
    found = [g for g in re.split(r"[,\s]+", os.environ.get("IPFS_GATEWAY", "")) if g]
    return found[0].rstrip("/") if found else None


def first_line(content: ContentStore, cid: str | None, limit: int = STDERR_HEAD) -> str:
    """The first non-empty line within the first `limit` bytes of file `cid` ("" if none)."""
    from ..errors import BflowError
    from ..storage import dag, unixfs

    if not cid or cid == unixfs.empty_file_cid():
        return ""
    try:
        head = b"".join(dag.read_range(content, unixfs.parse_cid(cid), 0, limit))
    except (BflowError, OSError, ValueError):
        return ""
    return next((line.strip() for line in head.decode("utf-8", errors="replace").splitlines() if line.strip()), "")


def shard_rows(job: JobRecord, content: ContentStore) -> list[dict]:
    """One row per shard of `job`, in shard order."""
    return [{
        "shard": s.index,
        "datums": datum_paths(s.datums),
        "state": s.state,
        "node": s.node or "",
        "attempts": s.attempts,
        "exit code": "" if s.exit_code is None else s.exit_code,
        "output CID": s.cid or "",
        "stderr": first_line(content, s.stderr_cid),
    } for s in job.shards]


def _counts(shards: list[ShardRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in shards:
        counts[s.state] = counts.get(s.state, 0) + 1
    return counts


def summary_markdown(job: JobRecord, gateway: str | None = None) -> str:
    """The job in a few lines of markdown: id, state, shard counts, CID, how to fetch it."""
    counts = _counts(job.shards)
    lines = [f"# Job `{job.id}`: {job.state}", "",
             f"Pipeline **{job.pipeline}**" + (f", spec `{job.spec_file}`" if job.spec_file else ""), "",
             "| shards | " + " | ".join(counts) + " |",
             "|---|" + "---|" * len(counts),
             f"| {len(job.shards)} | " + " | ".join(str(n) for n in counts.values()) + " |", ""]
    if job.cid:
        link = f" ([gateway]({gateway}/ipfs/{job.cid}))" if gateway else ""
        lines += [f"Job CID: `{job.cid}`{link}", "",
                  f"Fetch the results: `bflow get {job.id} -o DIR` (stdout, stderr, outputs/, shards/, "
                  "manifest.json)", ""]
    if job.published:
        lines += [f"Published to `{job.published}`", ""]
    if job.error:
        lines += [f"Error: {job.error}", ""]
    lines.append(f"Logs of a shard: `bflow logs {job.id} --shard N` · `bflow describe {job.id}`")
    return "\n".join(lines)


async def publish_artifacts(job: JobRecord, content: ContentStore, client, flow_run_id) -> None:
    """Create the table and summary artifacts of `job` on flow run `flow_run_id` with the
    async Prefect `client`. Logs an API error on the flow run instead of raising it."""
    from prefect.client.schemas.actions import ArtifactCreate

    gateway = gateway_url()
    artifacts = [
        ArtifactCreate(type="table", key=artifact_key(job.pipeline, "shards"), flow_run_id=flow_run_id,
                       description=f"The shards of job {job.id} ({job.pipeline}): {job.state}",
                       data=json.dumps(shard_rows(job, content))),
        ArtifactCreate(type="markdown", key=artifact_key(job.pipeline), flow_run_id=flow_run_id,
                       description=f"Job {job.id} ({job.pipeline}): {job.state}",
                       data=summary_markdown(job, gateway)),
    ]
    # both at once: the server is still digesting the job's events when it ends
    outcomes = await asyncio.gather(*(client.create_artifact(artifact=a) for a in artifacts), return_exceptions=True)
    failed = [e for e in outcomes if isinstance(e, Exception)]
    if failed:  # an artifact is a view; the job's record is in the job store
        from prefect import get_run_logger

        get_run_logger().warning("bflow could not create the artifacts of job %s: %s", job.id, failed[0])
