"""`bflow`: the command line (PRODUCT.md section 4).

Every command turns a BflowError into one located line and its exit status; heavy
imports (Prefect) happen only in the commands that run jobs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import wraps
from pathlib import Path
from typing import Optional

import typer

from .. import __version__
from ..errors import BflowError
from . import nats_options
from . import network as network_cli
from . import render
from . import server as server_cli

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compute over data: YAML pipelines, sharded by glob, run as Prefect flows on compute nodes.")


def command(name: str | None = None, on: typer.Typer | None = None):
    """Register a command (on `app`, or the sub-command group `on`) whose BflowErrors become a
    message and an exit status."""

    def register(fn):
        @wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except BflowError as e:
                render.error(e)
                raise typer.Exit(e.exit_code) from None
            except KeyboardInterrupt:
                render.err.print("interrupted")
                raise typer.Exit(130) from None

        return (on or app).command(name)(wrapper)

    return register


def _store():
    from ..home import jobs_db
    from ..jobs.store import JobStore

    return JobStore(jobs_db())


def _content():
    from ..home import store_root
    from ..storage import ContentStore

    return ContentStore(store_root())


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


# -- spec ------------------------------------------------------------------------
@command()
def validate(spec: Path = typer.Argument(..., help="pipeline spec (YAML)"),
             as_json: bool = typer.Option(False, "--json", help='{"spec", "valid", "pipelines"} or '
                                                                 '{"spec", "valid": false, "error"}')):
    """Check a spec; exit 0, or 2 with the located errors."""
    from ..flow.dag import build_dag
    from ..spec import load_spec

    try:
        pipelines = load_spec(spec)
        build_dag(pipelines)  # pipeline:// inputs name a pipeline of the file or one that completed here
    except BflowError as e:
        if as_json:
            print(json.dumps({"spec": str(spec), "valid": False, "error": str(e), "hint": e.hint}))
        raise
    if as_json:
        print(json.dumps({"spec": str(spec), "valid": True, "pipelines": [p.name for p in pipelines]}))
        return
    render.err.print(f"{spec}: {render.plural(len(pipelines), 'pipeline')} valid: "
                     f"{', '.join(p.name for p in pipelines)}")


@command()
def schema(as_json: bool = typer.Option(True, "--json", help="the schema is JSON either way")):
    """Print the JSON Schema of a pipeline document (for editors)."""
    from ..spec import json_schema

    _print_json(json_schema())


@command()
def plan(spec: Path, as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
         network: Optional[str] = typer.Option(None, help="network whose nodes `batch_size: auto` counts; "
                                               "default: the embedded network")):
    """Dry run: the shards each pipeline would get (in the order they would run)."""
    from ..flow.dag import build_dag, plan_dag
    from ..network.census import nodes_for_auto_batches
    from ..spec import load_spec

    pipelines = load_spec(spec)
    plans = plan_dag(build_dag(pipelines), nodes_for_auto_batches(pipelines, network))
    for p in plans:
        for w in p.warnings:
            render.warn(w)
    if as_json:
        _print_json({"pipelines": [p.to_json() for p in plans]})
    else:
        for p in plans:
            render.out.print(render.plan_table(p))
            if getattr(p, "batch", None) is not None:  # batch_size: auto (plan/batching.py)
                render.out.print(p.batch.describe())


# -- running ---------------------------------------------------------------------
@command()
def run(
    spec: Path,
    network: Optional[str] = typer.Option(None, help="network URL; default: an embedded network of 3 nodes"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write the results here (as `bflow get`)"),
    detach: bool = typer.Option(False, help="start the job and return its id at once"),
    as_json: bool = typer.Option(False, "--json", help="print the job as JSON when it ends"),
    job_ids: Optional[str] = typer.Option(None, hidden=True, help="ids for the jobs (used by --detach)"),
    reprocess: bool = typer.Option(False, "--reprocess", help="run every shard, reusing no earlier result"),
    advertise: Optional[str] = typer.Option(None, help=network_cli.ADVERTISE_HELP),
    tls_ca: Optional[Path] = nats_options.TLS_CA_OPTION,
    tls_cert: Optional[Path] = nats_options.TLS_CERT_OPTION,
    tls_key: Optional[Path] = nats_options.TLS_KEY_OPTION,
    creds: Optional[Path] = nats_options.CREDS_OPTION,
):
    """Run every pipeline in SPEC; wait, show progress, print the merged stdout."""
    from ..spec import load_spec

    pipelines = load_spec(spec)
    _advertise(advertise)
    network = nats_options.secure(network, tls_ca, tls_cert, tls_key, creds)
    if detach:
        return _detach(spec, pipelines, network, output, reprocess)
    from ..flow.dag import build_dag, not_run_reason, plan_dag
    from ..flow.runner import run_dag
    from ..network.census import nodes_for_auto_batches
    from ..jobs.results import stream, write_results
    from ..jobs.store import new_job_id
    from .progress import RunDisplay, prepare_prefect

    dag = build_dag(pipelines)
    ids = dict(zip((p.name for p in pipelines), job_ids.split(","))) if job_ids else {}
    ids = {p.name: ids.get(p.name) or new_job_id() for p in pipelines}  # the display follows each job
    with RunDisplay({p.name: dag.after(p) for p in pipelines}, job_ids=ids) as display:
        display.waiting("planning")
        plan_nodes = nodes_for_auto_batches(pipelines, network)
        plans = plan_dag(dag, plan_nodes)  # every input not read from a pipeline of this file is listed before anything runs
        for p in plans:
            for w in p.warnings:
                render.warn(w)
        display.planned(plans)
        prepare_prefect(display)
        records = run_dag(dag, plans={p.pipeline: p for p in plans if not p.after}, job_ids=ids,
                          progress_for=display.job, warn=render.warn, plan_nodes=plan_nodes,
                          network=network, reprocess=reprocess)
        display.finish(records)
    content = _content()
    for record in records:
        if (reason := not_run_reason(record)) is not None:
            render.err.print(f"job {record.id} ({record.pipeline}): not run ({reason})", highlight=False,
                             markup=False, soft_wrap=True)
            continue
        if output is not None:
            write_results(content, record, output if len(records) == 1 else output / record.pipeline)
        if not as_json:  # a file of several pipelines labels each line with its pipeline
            render.write_stdout(stream(content, record.shards, "stdout"), record.pipeline if len(records) > 1 else None)
        render.summarise(record)
    if as_json:
        _print_json(records[0].to_json() if len(records) == 1 else {"jobs": [r.to_json() for r in records]})
    if any(r.state != "completed" for r in records):
        raise typer.Exit(1)


def _advertise(host: str | None) -> None:
    """The requester's gateway is started deep inside the run (network/embedded.py); the
    environment carries the address there, and to a detached run's process."""
    if host:
        os.environ["BFLOW_ADVERTISE"] = host


def _detach(spec: Path, pipelines, network, output, reprocess: bool = False) -> None:
    from ..jobs.store import new_job_id

    ids = [new_job_id() for _ in pipelines]
    cmd = [sys.executable, "-m", "bacalhau_flow.cli", "run", str(spec), "--job-ids", ",".join(ids)]
    if network:
        cmd += ["--network", network]
    if output:
        cmd += ["--output", str(output)]
    if reprocess:
        cmd += ["--reprocess"]
    from ..home import bflow_home

    log = bflow_home() / "detached.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True)
    for job_id in ids:
        print(job_id)


# -- jobs ------------------------------------------------------------------------
@command("list")
def list_jobs(as_json: bool = typer.Option(False, "--json"), limit: int = typer.Option(50, help="newest N jobs"),
              pipeline: Optional[str] = typer.Option(None, "--pipeline", "-p", help="only the jobs of this pipeline"),
              state: Optional[str] = typer.Option(None, "--state", "-s", help="only the jobs in this state")):
    """The jobs, newest first, with their shards completed out of all."""
    from ..jobs.store import JOB_STATES

    if state is not None and state not in JOB_STATES:
        render.error(BflowError(f"--state {state}: not a job state", hint=f"one of {', '.join(JOB_STATES)}"))
        raise typer.Exit(2)
    jobs = _store().list_jobs(limit, pipeline=pipeline, state=state)
    if as_json:
        _print_json([j.summary_json() for j in jobs])
    else:
        render.out.print(render.jobs_table(jobs))


@command()
def describe(job: str, as_json: bool = typer.Option(False, "--json")):
    """One job with its shards: state, node, attempts, exit code, output CID."""
    record = _store().get(job)
    if as_json:
        _print_json(record.to_json())
        return
    render.out.print(f"[bold]{record.id}[/]  pipeline {record.pipeline}  {render.styled(record.state)}  "
                     f"created {record.created_iso[:19]}", highlight=False)
    render.out.print(f"cid {record.cid or '-'}", highlight=False)
    if record.published:
        render.out.print(f"published {record.published}", highlight=False, markup=False)
    if record.error:
        render.out.print(f"error: {record.error}", highlight=False, markup=False)
    if record.state == "interrupted":
        render.out.print(f"interrupted: the process that ran it ({record.owner.describe()}) is gone; "
                         f"`bflow resume {record.id[:10]}` continues it", highlight=False, markup=False)
    if record.dropped:
        render.out.print(f"dropped {render.plural(record.dropped, 'report')} (progress, results, blocks) from nodes "
                         "the shards were not given to: someone on the network is sending them", highlight=False,
                         markup=False)
    render.out.print(render.shards_table(record.shards))


@command()
def logs(job: str, shard: Optional[int] = typer.Option(None, help="one shard's logs"),
         attempt: Optional[int] = typer.Option(None, help="an earlier attempt of --shard"),
         follow: bool = typer.Option(False, "--follow", "-f", help="a running job: print each shard's logs as it "
                                                                  "ends, until the job ends (Ctrl-C stops)")):
    """stdout (to stdout) and stderr (to stderr) of a job, or of one shard."""
    from . import logs as job_logs

    store, content = _store(), _content()
    try:
        record = job_logs.job_to_follow(store, job) if follow else store.get(job)
        shards = job_logs.chosen_shards(store, record, shard, attempt)
        if not follow or attempt is not None:
            return job_logs.print_logs(content, shards)
        job_logs.follow(store, content, record.id, shard, say=_say)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # quietly: the job goes on


@command()
def rerun(
    job: str,
    shard: Optional[list[int]] = typer.Option(None, "--shard", help="rerun this shard (repeatable); default: the failed ones"),
    network: Optional[str] = typer.Option(None, help="network URL; default: an embedded network of 3 nodes"),
    as_json: bool = typer.Option(False, "--json", help="print the job as JSON when it ends"),
    advertise: Optional[str] = typer.Option(None, help=network_cli.ADVERTISE_HELP),
    tls_ca: Optional[Path] = nats_options.TLS_CA_OPTION,
    tls_cert: Optional[Path] = nats_options.TLS_CERT_OPTION,
    tls_key: Optional[Path] = nats_options.TLS_KEY_OPTION,
    creds: Optional[Path] = nats_options.CREDS_OPTION,
):
    """Run the failed shards of a job (or the chosen ones) again, as new attempts of that job."""
    from ..flow.rerun import rerun_job

    _advertise(advertise)
    network = nats_options.secure(network, tls_ca, tls_cert, tls_key, creds)
    from .progress import RunDisplay

    with RunDisplay() as progress:
        with progress.job("rerun", len(shard) if shard else None) as on_progress:
            record, ran = rerun_job(job, shard, network=network, on_progress=on_progress)
    if not ran:
        render.err.print(f"nothing to rerun: no shard of job {record.id} failed (`--shard N` picks shards)",
                         highlight=False, markup=False, soft_wrap=True)
    if as_json:
        _print_json(record.to_json())
    render.summarise(record)
    if record.state != "completed":
        raise typer.Exit(1)


@command()
def resume(
    job: str,
    network: Optional[str] = typer.Option(None, help="network URL; default: the one the job ran on"),
    as_json: bool = typer.Option(False, "--json", help="print the job as JSON when it ends"),
    advertise: Optional[str] = typer.Option(None, help=network_cli.ADVERTISE_HELP),
    tls_ca: Optional[Path] = nats_options.TLS_CA_OPTION,
    tls_cert: Optional[Path] = nats_options.TLS_CERT_OPTION,
    tls_key: Optional[Path] = nats_options.TLS_KEY_OPTION,
    creds: Optional[Path] = nats_options.CREDS_OPTION,
):
    """Continue an interrupted job (its `bflow run` died): completed shards are kept, results
    its nodes still offer are taken, the rest run."""
    from ..flow.resume import resume_job

    _advertise(advertise)
    network = nats_options.secure(network, tls_ca, tls_cert, tls_key, creds)
    from .progress import RunDisplay

    with RunDisplay() as progress:
        with progress.job("resume", None) as on_progress:
            record, counts = resume_job(job, network=network, on_progress=on_progress)
    render.err.print(f"resumed job {record.id}: {counts['kept']} kept, {counts['followed']} taken over from their "
                     f"nodes, {counts['dispatched']} dispatched", highlight=False, markup=False, soft_wrap=True)
    if as_json:
        _print_json(record.to_json())
    render.summarise(record)
    if record.state != "completed":
        raise typer.Exit(1)


@command()
def get(job: str, output: Path = typer.Option(..., "--output", "-o", help="folder to write the results into"),
        as_json: bool = typer.Option(False, "--json", help='print {"id", "state", "cid", "output"}')):
    """Fetch a job's results: stdout, stderr, outputs/, shards/<index>/, manifest.json."""
    from ..jobs.results import write_results

    record = _store().get(job)
    write_results(_content(), record, output)
    if as_json:
        print(json.dumps({"id": record.id, "state": record.state, "cid": record.cid, "output": str(output)}))
    render.err.print(f"job {record.id} ({record.state}) written to {output}", highlight=False)


@command()
def add(path: Path = typer.Argument(..., help="a file or folder"),
        wrap: bool = typer.Option(False, "--wrap", "-w", help="wrap a file in a folder, so it keeps its name"),
        as_json: bool = typer.Option(False, "--json", help='print {"cid", "path"}')):
    """Put a file or folder into this machine's content store; print its CID (as `ipfs add -r
    --cid-version 1` computes it). Use it as an input with `url: ipfs://CID`."""
    from ..storage import unixfs

    if not os.path.lexists(path):
        raise BflowError(f"{path}: no such file or directory", hint="give the path of a file or folder to add")
    content = _content()
    if wrap and path.is_file():
        with open(path, "rb") as f:  # every block is checked against its CID as it is stored
            ref = unixfs.import_file(f, lambda cid, block: content.put_block(unixfs.cid_to_str(cid), bytes(block)))
        cid = unixfs.build_directory([(os.fsencode(path.name), ref)],
                                     lambda c, block: content.put_block(unixfs.cid_to_str(c), bytes(block))).cid_str
    else:
        cid, skipped = content.put_tree_report(path)
        if skipped:
            what = "symlink or special file" if len(skipped) == 1 else "symlinks or special files"
            render.warn(f"skipped {len(skipped)} {what}: {', '.join(skipped[:5])}" + (" ..." if len(skipped) > 5 else ""))
    print(json.dumps({"cid": cid, "path": str(path)}) if as_json else cid)
    note = "" if path.is_dir() or wrap else " (a single file is mounted under its CID; --wrap keeps its name)"
    render.err.print(f"added {path}; use it as an input with `url: ipfs://{cid}`{note}", highlight=False, markup=False)


@command()
def cancel(job: str, wait: float = typer.Option(30.0, help="seconds to wait for the job to stop"),
           as_json: bool = typer.Option(False, "--json", help='print {"id", "state", "cancelled"}: cancelled is '
                                                              'false for a job that had already ended')):
    """Stop a running job: in-flight shards are killed, the job is marked cancelled."""
    store = _store()
    record = store.get(job, with_shards=False)
    if record.state not in ("queued", "running", "interrupted"):
        if as_json:
            print(json.dumps({"id": record.id, "state": record.state, "cancelled": False}))
        render.err.print(f"job {record.id} already ended: {record.state}", highlight=False)
        return
    from ..jobs.owner import owner_alive_here

    if record.state != "interrupted" and owner_alive_here(record.owner):
        os.kill(record.pid, signal.SIGINT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if store.get(record.id, with_shards=False).state not in ("queued", "running"):
                break
            time.sleep(0.2)
    if store.get(record.id, with_shards=False).state in ("queued", "running", "interrupted"):
        store.cancel_unfinished_shards(record.id)
        store.set_job(record.id, state="cancelled", error="cancelled by the user")
    state = store.get(record.id, with_shards=False).state  # it may have ended on its own meanwhile
    if as_json:
        print(json.dumps({"id": record.id, "state": state, "cancelled": state == "cancelled"}))
    render.err.print(f"job {record.id} {state}", highlight=False)



@command()
def version(network: Optional[str] = typer.Option(None, help="also show the nodes of this network"),
            as_json: bool = typer.Option(False, "--json", help='{"version": ..., "nodes": [{"id", "version"}]}')):
    """The client version, and the versions of the nodes it can see."""
    nodes = network_cli.version_of_network(network) if network else []
    if as_json:
        out = {"version": __version__}
        if network:
            out["nodes"] = [{"id": n.id, "version": n.version} for n in nodes]
        print(json.dumps(out))
        return
    print(f"bflow {__version__}")
    for n in nodes:
        print(f"node {n.id} {n.version}")


@command("id")
def id_(as_json: bool = typer.Option(False, "--json", help='print {"id": ...}')):
    """The requester id of this $BFLOW_HOME: the key `bflow run` signs with. A node runs its
    shards once it trusts this id (`bflow node --trust ID`)."""
    from ..network.embedded import client_identity

    ident = client_identity().node_id
    print(json.dumps({"id": ident}) if as_json else ident)


# -- schedules -------------------------------------------------------------------
@command()
def deploy(
    spec: Path,
    network: Optional[str] = typer.Option(None, help="network URL the runs use; default: an embedded network"),
    delete: bool = typer.Option(False, "--delete", help="remove the deployments of SPEC's pipelines"),
    as_json: bool = typer.Option(False, "--json", help='print {"deployments": [{"name", "pipeline", "action", '
                                                       '"schedule", "id"}]}'),
    tls_ca: Optional[Path] = nats_options.TLS_CA_OPTION,
    tls_cert: Optional[Path] = nats_options.TLS_CERT_OPTION,
    tls_key: Optional[Path] = nats_options.TLS_KEY_OPTION,
    creds: Optional[Path] = nats_options.CREDS_OPTION,
):
    """Register a Prefect deployment (with its schedule) per pipeline in SPEC; `bflow serve` runs them."""
    from ..flow.deploy import deploy as deploy_spec

    network = nats_options.secure(network, tls_ca, tls_cert, tls_key, creds, warn=None if delete else render.warn)

    done = deploy_spec(spec, network=network, delete=delete, echo=_say)
    if as_json:
        print(json.dumps({"deployments": [d.to_json() for d in done]}))
        return
    for d in done:
        print(d.line(), flush=True)


@command()
def serve(poll: float = typer.Option(1.0, help="seconds between looks for due runs"),
          tls_ca: Optional[Path] = nats_options.TLS_CA_OPTION,
          tls_cert: Optional[Path] = nats_options.TLS_CERT_OPTION,
          tls_key: Optional[Path] = nats_options.TLS_KEY_OPTION,
          creds: Optional[Path] = nats_options.CREDS_OPTION):
    """Run the schedules of the deployed pipelines, and the runs retried from the Prefect UI,
    until Ctrl-C; uses the local Prefect server (started if needed) unless PREFECT_API_URL is set."""
    from ..flow.serve import serve as serve_deployments

    nats_options.secure(None, tls_ca, tls_cert, tls_key, creds)

    serve_deployments(poll=poll, echo=lambda line: print(line, flush=True))


def _say(line: str) -> None:
    render.err.print(line, highlight=False, markup=False, soft_wrap=True)


network_cli.register(app, command)
server_cli.register(app, command)


def main() -> None:
    from ..flow import interrupt  # imports nothing heavy

    interrupt.leave_hard()  # a stuck Ctrl-C, or a second one, ends this command at once (exit 130)
    app()
