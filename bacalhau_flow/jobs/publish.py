"""Publishing a job's merged outputs to the url of `output.publish`, through fsspec.

    output:
      publish: s3://results/{pipeline}/{job_id}     # or file://..., a path relative to the spec, ...

Decisions:

- Only a job that completed is published. A failed job's partial outputs would read as a
  result to whatever consumes the url; they stay in the content store (`bflow get JOB`).
- What is published is the merged outputs tree (the job's CID, what `bflow get` writes to
  `DIR/outputs`): each file at `<url>/<path in the tree>`, streamed from the content store.
  Files already at the url with the same names are overwritten; nothing there is deleted.
  A job with no output files publishes nothing (a local target folder is still created).
- Placeholders `{job_id}` and `{pipeline}` are filled in; any other is a spec error.
- Transient errors are retried by the rule of plan/retries.py (S3: s3fs and botocore retry
  themselves). Anything else, a missing bucket or a refused write, is a PublishError naming
  the url; the job then fails, its outputs staying in the content store. Files written before
  the failure stay at the url.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from ..errors import PublishError
from ..plan.retries import SELF_RETRYING, attempts_for, reason, retry
from ..spec.models import url_scheme
from ..storage import ContentStore

__all__ = ["check_publish_url", "publish_outputs", "publish_url"]

PARALLEL_PUTS = 8  # files written at the same time


def publish_url(pipeline: Any, job_id: str) -> str | None:
    """Where `pipeline` publishes the outputs of job `job_id` (placeholders filled in, a local
    path made absolute against the spec's folder), or None when it does not publish."""
    template = pipeline.output.publish
    if not template:
        return None
    url = template.format(job_id=job_id, pipeline=pipeline.name)
    scheme = url_scheme(url)
    if scheme is None:
        return os.path.abspath(os.path.join(pipeline.base_dir, os.path.expanduser(url)))
    return url


def check_publish_url(pipeline: Any) -> None:
    """Fail before a job runs when its publish url's protocol cannot be used here (the
    fsspec implementation is not installed). Raises PublishError."""
    url = publish_url(pipeline, "j-check")
    if url is None:
        return
    _filesystem(url)


def publish_outputs(content: ContentStore, cid: str, url: str) -> int:
    """Write every file of the tree `cid` under `url`; return how many. Raises PublishError."""
    fs, root = _filesystem(url)
    local = _protocol(fs) in ("file", "local")
    attempts = attempts_for(fs)
    root = root.rstrip("/")
    files = list(content.iter_files(cid))
    if local:
        _guard(url, lambda: os.makedirs(root, exist_ok=True))

    def put(relpath: str, file_cid: str) -> None:
        target = f"{root}/{relpath}"
        if local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        with fs.open(target, "wb") as out:
            for chunk in content.iter_file(file_cid):
                out.write(chunk)

    if not files:
        return 0
    with ThreadPoolExecutor(min(PARALLEL_PUTS, len(files)), thread_name_prefix="bflow-publish") as pool:
        futures = [pool.submit(_guard, url, lambda r=rel, c=fc: retry(lambda: put(r, c), attempts), rel)
                   for rel, fc, _size in files]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
    for f in futures:
        if not f.cancelled() and f.exception() is not None:
            raise f.exception()
    return len(files)


def _filesystem(url: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(url)
    except ImportError as exc:
        raise PublishError(f"cannot publish to {url}: its protocol needs a package that is not installed",
                           hint=str(exc) or "install the fsspec implementation for this protocol") from None
    except Exception as exc:  # noqa: BLE001 - never a raw traceback for a bad url
        raise PublishError(f"cannot publish to {url} ({reason(exc)})", hint="check output.publish") from None


def _protocol(fs: Any) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def _guard(url: str, step, relpath: str | None = None):
    """Run one step of publishing; any failure becomes a PublishError naming the url."""
    try:
        return step()
    except PublishError:
        raise
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many kinds; a ContentError too
        hint = "check that the target exists and these credentials may write there"
        if url_scheme(url) in SELF_RETRYING:
            hint = "check the bucket, and the AWS credentials and AWS_ENDPOINT_URL of this process"
        raise PublishError(f"cannot publish the outputs to {url} ({relpath + ': ' if relpath else ''}{reason(exc)})",
                           hint=hint + "; the outputs are kept: `bflow get JOB -o DIR`") from None
