"""How the CLI shows things to a person: tables, errors, a job's stdout (the live display of a
run is cli/progress.py)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import BflowError

# Piped output keeps whole lines (ids, CIDs) rather than folding them at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

STATE_STYLE = {
    "completed": "green", "failed": "red", "cancelled": "yellow", "running": "cyan",
    "queued": "dim", "skipped": "blue", "retrying": "magenta", "interrupted": "bold red",
}


def styled(state: str) -> str:
    return f"[{STATE_STYLE.get(state, '')}]{state}[/]"


def error(e: BflowError) -> None:
    # escaped: a message quotes user input (a spec key like `[/x]`), which is not rich markup
    err.print(f"[bold red]error:[/] {escape(e.message)}", markup=True, highlight=False, soft_wrap=True)
    if e.hint:
        err.print(f"[bold]hint:[/] {escape(e.hint)}", markup=True, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def write_stdout(chunks, label: str | None = None, out=None) -> None:
    """A job's merged stdout to stdout, byte for byte; with a `label` (a file of several
    pipelines), each line starts with `label | `, as a compose tool labels its services, and a
    last line without its newline gets one."""
    out = out or sys.stdout.buffer
    if label is None:
        for chunk in chunks:
            out.write(chunk)
    else:
        prefix, rest = label.encode() + b" | ", b""
        for chunk in chunks:
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                out.write(prefix + line + b"\n")
        if rest:
            out.write(prefix + rest + b"\n")
    out.flush()


def plural(n: int, word: str) -> str:
    """`1 shard`, `3 shards`."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summarise(record) -> None:
    """The lines after a run: the job's state and counts, where it was published, its error."""
    done = sum(s.state == "completed" for s in record.shards)
    reused = sum(s.state == "skipped" for s in record.shards)
    line = (f"job {record.id} ({record.pipeline}): {styled(record.state)}, "
            f"{done + reused}/{plural(len(record.shards), 'shard')} completed")
    if reused:
        line += f" ({reused} reused from earlier jobs)"
    err.print(line, highlight=False, soft_wrap=True)
    if reused and reused == len(record.shards):
        err.print(f"  nothing changed: {reused} of {plural(reused, 'shard')} reused (`--reprocess` runs them again)",
                  highlight=False, markup=False, soft_wrap=True)
    if record.published:
        err.print(f"  published to {record.published}", highlight=False, markup=False, soft_wrap=True)
    if record.error:
        err.print(f"  {record.error}", highlight=False, markup=False)
        err.print(f"  logs: bflow logs {record.id[:10]} --shard N   ·   bflow describe {record.id[:10]}",
                  highlight=False, markup=False)


def jobs_table(jobs) -> Table:
    table = Table("JOB", "PIPELINE", "STATE", "COMPLETED", "CREATED", box=None)
    for j in jobs:
        done = f"{j.completed}/{j.shard_count}" + (f" ({j.reused} reused)" if j.reused else "")
        table.add_row(j.id[:14], j.pipeline, styled(j.state), done, j.created_iso[:19])
    return table


def shards_table(shards) -> Table:
    table = Table("#", "SHARD", "STATE", "NODE", "ATTEMPTS", "EXIT", "OUTPUT CID", "ERROR", box=None)
    for s in shards:
        table.add_row(
            str(s.index), s.id, styled(s.state), s.node or "-", str(s.attempts),
            "-" if s.exit_code is None else str(s.exit_code), s.cid or "-",
            (s.error or (f"reused from {s.reused_from[:14]}" if s.reused_from else ""))[:60],
        )
    return table


def plan_table(plan) -> Table:
    if getattr(plan, "after", None):  # reads another pipeline of the file: planned once that ran
        return f"{plan.pipeline}: planned after {' and '.join(plan.after)} {'runs' if len(plan.after) == 1 else 'run'}"
    table = Table("#", "SHARD", "DATUMS", box=None, title=f"{plan.pipeline}: {plural(len(plan.shards), 'shard')}")
    for s in plan.shards[:200]:
        datums = [_datum_text(d) for d in s.datums]
        shown = "; ".join(datums[:4]) + (f"; … ({len(datums)} datums)" if len(datums) > 4 else "")
        table.add_row(str(s.index), s.id, shown)
    if len(plan.shards) > 200:
        table.add_row("…", f"{len(plan.shards) - 200} more", "")
    return table


def _datum_text(datum) -> str:
    """`/a.txt` for a single input's datum; `books:/a.txt + refs:/b.txt` for a combined one."""
    mounts = datum.to_json()
    if len(mounts) == 1:
        return ", ".join(next(iter(mounts.values())))
    return " + ".join(f"{name}:{','.join(paths)}" for name, paths in mounts.items())


def nodes_table(nodes) -> Table:
    table = Table("NODE", "VERSION", "EXECUTORS", "LABELS", "CPU free/total", "MEMORY free/total", "GPU",
                  "RUNNING", "QUEUED", "ADDRESS", "GATEWAY", box=None)
    for n in nodes:
        table.add_row(n.id, n.version, ",".join(n.executors), ",".join(f"{k}={v}" for k, v in n.labels.items()) or "-",
                      f"{n.free.cpu:g}/{n.total.cpu:g}", f"{_gib(n.free.memory)}/{_gib(n.total.memory)}",
                      f"{n.free.gpu}/{n.total.gpu}", str(n.running), str(n.queued), n.address or "-", n.gateway or "-")
    return table


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}Gi"


def _bar(used: float, total: float, width: int = 10) -> str:
    """A load bar: `███░░░░░░░` for 30% used."""
    filled = round(width * used / total) if total > 0 else 0
    return "[cyan]" + "█" * filled + "[/][dim]" + "░" * (width - filled) + "[/]"


def network_tree(name: str, nodes, job=None):
    """The picture `bflow network` prints: the network, its nodes with their load, and under
    each node the shards of `job` that ran there, coloured by state. Nodes the job used that
    are not on the network now (the embedded network of a finished run, a node that died)
    are listed after the live ones."""
    from rich.tree import Tree

    tree = Tree(f"[bold]{name}[/]  {len(nodes)} node{'s' if len(nodes) != 1 else ''} seen")
    placed: dict[str, list] = {}
    for s in (job.shards if job else []):
        placed.setdefault(s.node or "(no node)", []).append(s)
    branches = {}
    for n in nodes:
        used_cpu, used_mem = n.total.cpu - n.free.cpu, n.total.memory - n.free.memory
        label = (f"[bold]{n.id}[/]  {','.join(n.executors)}  cpu {_bar(used_cpu, n.total.cpu)} "
                 f"{used_cpu:g}/{n.total.cpu:g}  mem {_bar(used_mem, n.total.memory)} "
                 f"{_gib(used_mem)}/{_gib(n.total.memory)}  running {n.running}, queued {n.queued}")
        if n.total.gpu:
            label += f"  gpu {n.total.gpu - n.free.gpu}/{n.total.gpu}"
        if n.labels:
            label += "  " + ",".join(f"{k}={v}" for k, v in n.labels.items())
        if getattr(n, "gateway", None):
            label += f"  [dim]{n.gateway}[/]"
        branches[n.id] = tree.add(label)
    for node, shards in placed.items():
        branch = branches.get(node) or tree.add(f"[bold]{node}[/]  [dim](not on this network now)[/]")
        marks = " ".join(f"[{STATE_STYLE.get(s.state, '')}]{s.index}[/]" for s in sorted(shards, key=lambda s: s.index))
        branch.add(f"job {job.id} ({job.pipeline}): shards {marks}")
    if job:
        legend = "  ".join(styled(state) for state in ("completed", "failed", "skipped", "running", "cancelled"))
        tree.add(f"[dim]shard colours:[/] {legend}")
    return tree
