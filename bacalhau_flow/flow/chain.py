"""The pipelines of one file as one Prefect flow run: the parent of their jobs' flow runs.

`run_dag` (flow/runner.py) of a file with several pipelines runs inside `as_one_flow_run`: a
flow `bflow-<file stem>` whose run is named `<file stem>-<first job id, short>`, tagged `bflow`,
with the parameters spec, pipelines and network. Each pipeline's job flow then starts as a
subflow of it (Prefect links them through a task run of the parent), so the UI shows a chain's
jobs together, in the order they ran. Pipelines that run at the same time run in threads
started with a copy of the parent's context (`contextvars.copy_context()`), so their flow runs
find the parent too.

The parent's final state says how the file ended: Completed when every job completed, Failed
naming the jobs that did not, Cancelled on Ctrl-C. Exceptions of the body (JobCancelled, a
BflowError) are re-raised to the caller as they are, after the parent run recorded its end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import BflowError, JobCancelled
from ..jobs.store import JobRecord
from . import interrupt
from .dag import PipelineDag
from .prefect_api import TAG


def chain_name(dag: PipelineDag) -> str:
    """The stem of the file the pipelines come from (`chain` for pipelines/chain.yaml)."""
    source = dag.pipelines[0].source_file
    return Path(source).stem if source and not source.startswith("<") else "pipelines"


def as_one_flow_run(dag: PipelineDag, first_job_id: str, network: str | None,
                    body: Callable[[], list[JobRecord]]) -> list[JobRecord]:
    """`body()` (it runs every pipeline of `dag`) inside one parent flow run; returns what it
    returns. Raises what `body` raises (JobCancelled on Ctrl-C); Ctrl-C outside the body (while
    Prefect starts the parent run) is JobCancelled too, a parent run that ended before its
    body ran a BflowError."""
    from prefect import Flow, tags
    from prefect.states import Cancelled, Completed, Failed

    from .prefect_api import prefect_ready

    prefect_ready()  # a managed server that had to start came up while Prefect was imported
    stem = chain_name(dag)
    source = dag.pipelines[0].source_file
    outcome: dict = {}

    def chain(spec: str | None = None if source.startswith("<") else source,
              pipelines: list[str] = [p.name for p in dag.pipelines],  # noqa: B006 - read only
              network: str | None = network):
        from prefect.context import FlowRunContext

        this_run = str(FlowRunContext.get().flow_run.id)
        interrupt.flow_run_began(this_run)  # one Ctrl-C that must end at once cancels it too
        try:
            records = outcome["records"] = body()
        except JobCancelled as e:
            outcome["error"] = e
            return Cancelled(message=str(e))
        except Exception as e:  # noqa: BLE001 - re-raised below, after the run recorded it
            outcome["error"] = e
            return Failed(message=str(e))
        finally:
            interrupt.flow_run_ended(this_run)
        not_completed = [f"{r.pipeline} {r.state}" for r in records if r.state != "completed"]
        if not_completed:
            return Failed(message=f"{len(not_completed)} of {len(records)} jobs did not complete: "
                                  + ", ".join(not_completed))
        return Completed(message=f"{len(records)} jobs completed")

    parent = Flow(chain, name=f"bflow-{stem}", flow_run_name=f"{stem}-{first_job_id[:10]}",
                  validate_parameters=False, persist_result=False, log_prints=False)
    try:
        with tags(TAG):
            parent(return_state=True)
    except KeyboardInterrupt:
        if "error" not in outcome and "records" not in outcome:
            raise JobCancelled("cancelled by the user before any job started") from None
    if "error" in outcome:
        raise outcome["error"]
    if "records" not in outcome:  # the parent run crashed before its body ran
        raise BflowError("the Prefect flow run of the file ended before its pipelines ran",
                         hint="`bflow list` shows the jobs; the Prefect UI shows why the flow run ended")
    return outcome["records"]
