"""`bflow devstack`, `bflow node`, `bflow nodes`: the peer network from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from ..errors import BflowError
from ..network.census import discover
from . import nats_options, render

SHARED_FROM = 100  # nodes in one process from which they share one connection and one gateway
ADVERTISE_HELP = ("host other machines reach this one's IPFS gateway by (default: the local address "
                  "of the connection to the network)")


def _size(value: Optional[str], field: str) -> Optional[int]:
    if value is None:
        return None
    from ..spec.values import parse_size

    try:
        return parse_size(value)
    except (ValueError, TypeError) as e:
        raise BflowError(f"--{field}: {e}", hint="sizes look like 512Mi, 4Gi or 1000000") from None


def _labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise BflowError(f"--label {item!r} is not key=value", hint="e.g. --label region=eu")
        labels[key] = value
    return labels


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def capacity_from(cpu, memory, disk, gpu):
    from ..network.capacity import detect_gpus, machine_capacity

    machine = machine_capacity(gpus=detect_gpus() if gpu is None else gpu)
    return machine.model_copy(update={k: v for k, v in
                                      dict(cpu=cpu, memory=_size(memory, "memory"), disk=_size(disk, "disk")).items()
                                      if v is not None})


def devstack(nodes: int = typer.Option(3, "--nodes", "-n", min=1, help="compute nodes to start"),
             processes: int = typer.Option(1, "--processes", "-p", min=1,
                                           help="spread the nodes over this many processes (thousands of nodes)"),
             transport: str = typer.Option("nats", help="nats (joinable by other processes) or memory"),
             port: int = typer.Option(0, help="nats-server port (0: any free port)"),
             host: str = typer.Option("127.0.0.1", help="address the nats-server listens on (this "
                                                        "machine's routable address, for other machines)"),
             join: Optional[str] = typer.Option(
                 None, help="join another network: the join URL another devstack prints "
                            "(nats://HOST:PORT; several, comma-separated, for the servers of a cluster)"),
             label: list[str] = typer.Option([], help="k=v for every node, repeatable"),
             trust: list[str] = typer.Option([], help="a requester id the nodes trust besides this "
                                                      "$BFLOW_HOME's own, repeatable"),
             advertise: Optional[str] = typer.Option(None, help=ADVERTISE_HELP),
             tls_ca: Optional[Path] = nats_options.TLS_CA_OPTION,
             tls_cert: Optional[Path] = nats_options.TLS_CERT_OPTION,
             tls_key: Optional[Path] = nats_options.TLS_KEY_OPTION,
             server_cert: Optional[Path] = nats_options.SERVER_CERT_OPTION,
             server_key: Optional[Path] = nats_options.SERVER_KEY_OPTION):
    """A local network of N compute nodes; prints the URL for `bflow run --network`. Its
    nats-server also takes leaf connections: another devstack started with `--join` that URL
    becomes one network with this one (jobs from either side run on nodes of both)."""
    if transport == "memory":
        raise BflowError("a memory devstack is reachable only from inside its own process",
                         hint="use --transport nats for a devstack other commands can join; "
                              "`bflow run` without --network already runs an in-process network")
    if transport != "nats":
        raise BflowError(f"unknown transport {transport!r}", hint="use nats or memory")
    try:
        from bacalhau_flow_nats.server import NatsServer
    except ImportError as e:
        raise BflowError("the NATS plugin is not installed", hint="pip install -e plugins/bacalhau-flow-nats") from e
    from ..network.embedded import client_identity
    from ..network.trust import Trust, check_id

    trusted = Trust([client_identity().node_id] + [check_id(t, "--trust") for t in trust])
    labels = _labels(label)
    remotes = [u.strip() for u in join.split(",") if u.strip()] if join else []
    nats_options.secure(None, tls_ca, tls_cert, tls_key)
    secured = nats_options.server_security(server_cert, server_key)  # TLS, and the token or user of the environment
    # A secured server takes no leaf connections: they would get past its TLS and authorization.
    server = NatsServer(port, host=host, leaf_port=None if secured else 0, leaf_remotes=remotes, **secured).start()
    try:
        if remotes:
            _wait_joined(server, join)
        with _nodes(server.url, nodes, processes, labels, trusted, advertise) as gateways:
            print(server.url, flush=True)
            render.err.print(f"{render.plural(nodes, 'node')} on {server.url}"
                             + (f" in {processes} processes" if processes > 1 else "")
                             + f"; run pipelines with `bflow run SPEC --network {server.url}`; Ctrl-C stops",
                             highlight=False)
            if gateways:
                render.err.print(f"IPFS gateways: {' '.join(gateways)}", highlight=False)
            if server.leaf_port is not None:
                render.err.print(f"other networks join this one with `bflow devstack --join {server.leaf_url}`"
                                 + (f"; joined {join}" if remotes else ""), highlight=False)
            _wait_for_signal()
    finally:
        server.stop()


@contextlib.contextmanager
def _nodes(url: str, nodes: int, processes: int, labels: dict[str, str], trusted, advertise: str | None):
    """The devstack's nodes, in this process or spread over `processes`; yields their gateways
    (only for nodes in this process: each worker process serves its nodes from one gateway)."""
    from ..home import bflow_home
    from ..network.devstack import Devstack
    from ..network.devstack_processes import DevstackProcesses

    root = bflow_home() / "devstack"
    if processes > 1:
        with DevstackProcesses(url, nodes, processes, root, labels=labels, trust=sorted(trusted.ids),
                               advertise=advertise):
            yield []
        return
    with Devstack(url, nodes, root=root, labels=[labels], advertise=advertise, keep=False, trust=trusted,
                  shared=nodes >= SHARED_FROM) as stack:
        yield stack.gateways if nodes < SHARED_FROM else []


def _wait_joined(server, join: str, timeout: float = 10.0) -> None:
    from bacalhau_flow_nats.server import NatsServerError

    try:
        server.wait_for_leaves(1, timeout)
    except NatsServerError:
        raise BflowError(f"--join {join}: no nats-server answered as a hub within {timeout:g} s",
                         hint="give the join URL the other devstack prints (\"other networks join this one "
                              "with ...\"), and check that its port is reachable from here") from None


def node(network: str = typer.Option(..., help="network URL, e.g. nats://127.0.0.1:4222"),
         label: list[str] = typer.Option([], help="k=v, repeatable"),
         cpu: Optional[float] = typer.Option(None, help="cores to offer (default: all)"),
         memory: Optional[str] = typer.Option(None, help="memory to offer, e.g. 4Gi (default: all)"),
         disk: Optional[str] = typer.Option(None, help="disk to offer, e.g. 20Gi (default: free space)"),
         gpu: Optional[int] = typer.Option(None, help="GPUs to offer (default: those nvidia-smi lists)"),
         name: str = typer.Option("default", help="local name: its key and store live under $BFLOW_HOME/nodes/NAME"),
         gateway_port: int = typer.Option(0, help="port of the node's IPFS gateway (0: any free port; -1: none)"),
         gateway_host: Optional[str] = typer.Option(
             None, help="address the gateway listens on (0.0.0.0: all; default: the local address of "
                        "the connection to the network)"),
         advertise: Optional[str] = typer.Option(None, help=ADVERTISE_HELP),
         tls_ca: Optional[Path] = nats_options.TLS_CA_OPTION,
         tls_cert: Optional[Path] = nats_options.TLS_CERT_OPTION,
         tls_key: Optional[Path] = nats_options.TLS_KEY_OPTION,
         creds: Optional[Path] = nats_options.CREDS_OPTION,
         max_store: Optional[str] = typer.Option(
             None, help="content store size past which acknowledged results and used inputs are "
                        "evicted, least recently used first, e.g. 20Gi (default: half the free disk)"),
         trust: list[str] = typer.Option([], help="a requester id (`bflow id`) whose shards to run, repeatable; "
                                                  "also read from $BFLOW_HOME/trusted"),
         open_: bool = typer.Option(False, "--open", help="run docker and wasm shards for any requester "
                                                          "(never local ones)"),
         pass_env: list[str] = typer.Option([], "--pass-env", help="NAME of one of this process's environment "
                                            "variables to give every shard, repeatable (shards see no other)"),
         allow_path: list[Path] = typer.Option([], "--allow-path", help="a folder whose files shards may read as "
                                               "local (file://) inputs, repeatable (default: none; remote "
                                               "requesters send local inputs as ipfs:// content)")):
    """Start one compute node and serve until Ctrl-C. It runs shards only for the requesters
    it trusts (--trust, $BFLOW_HOME/trusted; --open: docker and wasm for anyone). It serves its
    content store as an IPFS trustless gateway; the URL is printed and announced."""
    from ..home import bflow_home, nodes_root
    from ..network.devstack import Devstack
    from ..network.trust import Trust, check_id, load_trusted

    trusted = Trust(load_trusted(bflow_home() / "trusted") + [check_id(t, "--trust") for t in trust], open=open_)
    if not trusted.ids and not open_:
        render.warn("this node trusts no requester yet, so it will run nothing: give it `--trust ID` "
                    "(the requester's `bflow id`), list ids in $BFLOW_HOME/trusted, or use --open")
    network = nats_options.secure(network, tls_ca, tls_cert, tls_key, creds)
    labels = _labels(label)
    capacity = capacity_from(cpu, memory, disk, gpu)
    root = nodes_root() / name
    root.mkdir(parents=True, exist_ok=True)
    store_limit = _size(max_store, "max-store") if max_store else shutil.disk_usage(root).free // 2
    with Devstack(network, 1, max_store=store_limit, capacity=capacity, labels=[labels], root=root, keys=[root / "node.key"],
                  gateway_port=None if gateway_port < 0 else gateway_port, gateway_host=gateway_host,
                  advertise=advertise, trust=trusted, pass_env=pass_env,
                  allow_paths=[_allowed_folder(a) for a in allow_path]) as stack:
        info = stack.nodes[0].info()
        print(info.id, flush=True)
        render.err.print(f"node {info.id} on {network} at {info.address}: cpu={info.total.cpu:g} "
                         f"memory={info.total.memory} disk={info.total.disk} gpu={info.total.gpu} labels={labels}",
                         highlight=False)
        if info.gateway:
            render.err.print(f"IPFS gateway: {info.gateway} (IPFS_GATEWAY={info.gateway} reads its outputs)",
                             highlight=False)
        _wait_for_signal()


def _allowed_folder(path: Path) -> Path:
    if not path.is_dir():
        raise BflowError(f"--allow-path {path}: no such folder", hint="give a folder that exists on this machine")
    return path.resolve()


async def embedded_nodes():
    """The nodes a run without --network would start (they exist only while it runs)."""
    from ..network.embedded import open_network

    async with open_network(None) as requester:
        return sorted(requester.live_nodes(), key=lambda n: n.id)


def nodes(network: Optional[str] = typer.Option(None, help="network URL; default: the embedded network "
                                                            "a `bflow run` without --network starts"),
          as_json: bool = typer.Option(False, "--json"),
          wait: float = typer.Option(10.0, help="seconds to listen for the nodes at most "
                                                                    "(less once they stop answering)"),
          tls_ca: Optional[Path] = nats_options.TLS_CA_OPTION,
          tls_cert: Optional[Path] = nats_options.TLS_CERT_OPTION,
          tls_key: Optional[Path] = nats_options.TLS_KEY_OPTION,
          creds: Optional[Path] = nats_options.CREDS_OPTION):
    """The nodes of a network and their capacity."""
    network = nats_options.secure(network, tls_ca, tls_cert, tls_key, creds)
    found = asyncio.run(discover(network, wait) if network else embedded_nodes())
    if as_json:
        sys.stdout.write(json.dumps([n.model_dump() for n in found], indent=2) + "\n")
        return
    render.out.print(render.nodes_table(found))


def gateway(port: int = typer.Option(8080, help="port to listen on (0: any free port)"),
            host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: all)")):
    """Serve this machine's content store ($BFLOW_HOME/store) as an IPFS trustless gateway
    until Ctrl-C; prints its URL (for IPFS_GATEWAY)."""
    from ..home import store_root
    from ..storage import ContentStore
    from ..storage.gateway import serve

    def ready(url: str) -> None:
        print(url, flush=True)
        render.err.print(f"serving {store_root()} at {url}/ipfs/CID; read it with IPFS_GATEWAY={url}; "
                         "Ctrl-C stops", highlight=False)

    async def main() -> None:
        task = asyncio.ensure_future(serve(ContentStore(store_root()), host, port, ready))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())


def network(network: Optional[str] = typer.Option(None, help="network URL; without it, only where the job ran"),
            job: Optional[str] = typer.Option(None, help="the job whose shards to place (default: the newest)"),
            wait: float = typer.Option(10.0, help="seconds to listen for the nodes at most "
                                                                    "(less once they stop answering)"),
            tls_ca: Optional[Path] = nats_options.TLS_CA_OPTION,
            tls_cert: Optional[Path] = nats_options.TLS_CERT_OPTION,
            tls_key: Optional[Path] = nats_options.TLS_KEY_OPTION,
            creds: Optional[Path] = nats_options.CREDS_OPTION,
            as_json: bool = typer.Option(False, "--json", help="the nodes and the job's shards as JSON")):
    """A picture of the network: its nodes with their load, and where a job's shards ran
    (the given job, else the newest that ran on these nodes)."""
    network = nats_options.secure(network, tls_ca, tls_cert, tls_key, creds)
    from ..home import jobs_db
    from ..jobs.store import JobStore

    found = asyncio.run(discover(network, wait)) if network else []
    record = None
    if job or jobs_db().exists():
        store = JobStore(jobs_db())
        try:
            record = store.get(job) if job else _newest_job_on(store, network, {n.id for n in found})
        finally:
            store.close()
    if as_json:
        sys.stdout.write(json.dumps({"network": network, "nodes": [n.model_dump() for n in found],
                                     "job": record.to_json() if record else None}, indent=2) + "\n")
        return
    render.out.print(render.network_tree(network or "embedded network (exists only while a run lasts)",
                                         found, record))


def _newest_job_on(store, network: str | None, node_ids: set[str]):
    """The newest job that ran on `network` (None: the embedded one), so the picture of one
    network never shows a job of another."""
    from ..transports.redact import redacted

    wanted = redacted(network) if network else None
    for summary in store.list_jobs(limit=200):
        record = store.get(summary.id)
        if record.network == wanted:
            return record
        if record.network is None and any(s.node in node_ids for s in record.shards):
            return record  # recorded before jobs kept their network: it ran on these nodes
    return None


def version_of_network(network: str) -> list:
    """The nodes of `network` (each with its version)."""
    return asyncio.run(discover(network))


def register(app: typer.Typer, command) -> None:
    command("devstack")(devstack)
    command("node")(node)
    command("nodes")(nodes)
    command("gateway")(gateway)
    command("network")(network)
