"""Jobs on compute nodes that run on "other machines": `bflow node` processes that cannot see
the requester's files (bacalhau_flow/testing/remote.py), on a real nats-server.

Each scenario runs `bflow run SPEC --network nats://...` as the requester and checks that the
job completed on those nodes and that its outputs, read back with `bflow get`, are right.
An input that only works because the node reads the requester's disk (a local folder, a CID
in the requester's content store, an upstream pipeline's output) fails here, where it would
fail between real machines. No test sets IPFS_GATEWAY: the data must reach the nodes through
bflow itself.

The nats-server, the three nodes, the HTTP server and the S3 server are started once for the
module: a node start costs a Python start-up (about a second each) and the nodes must be
listed before any job runs.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from http_helpers import FileServer

from bacalhau_flow.testing.remote import RemoteNodes, assert_isolated
from bacalhau_flow.testing.requires import require_or_skip
from bacalhau_flow.testing.s3 import MOTO_HINT, MotoS3

FILES = {"a.txt": "alpha\n", "b.txt": "bravo\n", "c.txt": "charlie\n"}  # one shard each
UPPER = {name: text.upper() for name, text in FILES.items()}
LISTING = "".join(f"{name} {text}" for name, text in FILES.items())  # the merged stdout, in shard order

# Each shard prints "<file> <content>" for its file and writes the file upper-cased to its outputs.
# `${f##*/}`, not basename: the docker test image's busybox has no basename applet.
LOCAL_CMD = "for f in $BFLOW_INPUTS/in/*; do n=${f##*/}; echo \"$n $(cat $f)\"; tr a-z A-Z < $f > $BFLOW_OUTPUTS/$n; done"
DOCKER_CMD = "for f in /inputs/in/*; do n=${f##*/}; echo \"$n $(cat $f)\"; tr a-z A-Z < $f > /outputs/$n; done"


# -- the module's real parts -----------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The requester's work folder: every test's specs and data live under it, and the
    nodes see it empty. One folder for the module, since it is hidden when the nodes start."""
    return tmp_path_factory.mktemp("requester-work").resolve()


@pytest.fixture(scope="module")
def moto():
    """An S3 server, started before the nodes: a node reads its AWS settings (endpoint and
    credentials) from its environment when it starts, as a machine configured for S3 would.
    None without moto or s3fs; the S3 test then skips (fails in CI)."""
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError:
        yield None
        return
    with MotoS3() as server:
        yield server


@pytest.fixture(scope="module")
def remote(work, moto):
    """Three remote nodes on one nats-server, with the work folder and the requester's
    $BFLOW_HOME hidden from them."""
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")} if moto is not None else {}
    with RemoteNodes(hide=[work], count=3, env=env) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def http(work):
    """An HTTP file server on the requester's side, serving the folder `served` of the work folder."""
    root = work / "served"
    root.mkdir()
    with FileServer(root) as server:
        yield server


@pytest.fixture
def here(work, request) -> Path:
    """This test's own folder inside the requester's work folder."""
    folder = work / f"{request.node.name}-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    return folder


# -- helpers ------------------------------------------------------------------------------------
def unique(name: str) -> str:
    """Pipeline names are global in the requester's job store, which the session shares."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def put_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in FILES.items():
        (folder / name).write_text(text)
    return folder


def served_folder(http: FileServer) -> str:
    """A fresh folder of FILES on the HTTP server; its URL (a directory listing)."""
    name = uuid.uuid4().hex[:8]
    put_files(http.root / name)
    return f"{http.url}/{name}/"


def spec_of(folder: Path, pipeline: str, url: str, transform: str = f"cmd: [sh, -c, '{LOCAL_CMD}']") -> Path:
    spec = folder / "spec.yaml"
    spec.write_text(f"pipeline: {pipeline}\ninput: {{name: in, url: '{url}', glob: '/*.txt'}}\n"
                    f"transform: {{{transform}}}\n")
    return spec


def why(job: dict, stderr: str) -> str:
    """The job's error and its shards' errors, for an assertion message."""
    errors = {s["index"]: s["error"] for s in job.get("shards", []) if s.get("error")}
    return f"job error: {job.get('error')}; shard errors: {errors}; stderr tail: {stderr[-800:]}"


def run_remote(remote: RemoteNodes, spec: Path) -> dict:
    """`bflow run SPEC --network URL --json` as the requester; the job's (or jobs') JSON."""
    r = remote.bflow("run", spec, "--network", remote.url, "--json")
    assert r.stdout.strip(), f"bflow run printed no JSON (exit {r.code}): {r.stderr[-2000:]}"
    return {"code": r.code, "stderr": r.stderr, "result": r.json()}


def assert_completed_remotely(remote: RemoteNodes, job: dict, stderr: str, shards: int = 3) -> None:
    """The job completed, every shard on one of the remote nodes, and `bflow describe` agrees."""
    assert job["state"] == "completed", why(job, stderr)
    assert len(job["shards"]) == shards
    assert all(s["state"] == "completed" for s in job["shards"]), why(job, stderr)
    assert {s["node"] for s in job["shards"]} <= set(remote.ids)
    described = remote.bflow("describe", job["id"], "--json")
    assert described.code == 0, described.stderr
    assert described.json()["state"] == "completed"


def assert_outputs(remote: RemoteNodes, job: dict, folder: Path, outputs: dict[str, str], stdout: str) -> None:
    """`bflow get` brings back exactly `outputs` (path -> text) and the merged `stdout`."""
    got = folder / f"got-{job['id'][:10]}"
    r = remote.bflow("get", job["id"], "-o", got)
    assert r.code == 0, r.stderr
    found = {p.relative_to(got / "outputs").as_posix(): p.read_text()
             for p in (got / "outputs").rglob("*") if p.is_file()}
    assert found == outputs
    assert (got / "stdout").read_text() == stdout


def check_scenario(remote: RemoteNodes, spec: Path, folder: Path) -> dict:
    """Run a one-pipeline spec over FILES and check the job and its results; its JSON."""
    run = run_remote(remote, spec)
    job = run["result"]
    assert_completed_remotely(remote, job, run["stderr"])
    assert run["code"] == 0, run["stderr"]
    assert_outputs(remote, job, folder, UPPER, LISTING)
    return job


# -- the self-check --------------------------------------------------------------------------
def test_a_remote_node_cannot_see_the_requesters_files(remote, here, http):
    """The fixture's own proof: a file in the requester's work folder is invisible to the node
    processes, and a shard that names it by its absolute path fails to read it."""
    secret = here / "secret.txt"
    secret.write_text("only the requester can read this\n")
    assert_isolated(remote, secret)

    spec = spec_of(here, unique("peek"), served_folder(http), f"cmd: [sh, -c, 'cat {secret}']")
    job = run_remote(remote, spec)["result"]
    assert job["state"] == "failed"
    assert {s["exit_code"] for s in job["shards"]} == {1}
    assert {s["node"] for s in job["shards"]} <= set(remote.ids)
    got = here / "got"
    assert remote.bflow("get", job["id"], "-o", got).code == 0
    assert "No such file" in (got / "shards" / "0" / "stderr").read_text()
    assert (got / "stdout").read_text() == ""
    assert_isolated(remote, remote.requester_home / "jobs.sqlite")  # nor the requester's job store


# -- the scenarios ----------------------------------------------------------------------------
def test_a_local_folder_next_to_the_spec(remote, here):
    """(a) `url: data`, a folder beside the spec on the requester's disk, which no node can see."""
    put_files(here / "data")
    check_scenario(remote, spec_of(here, unique("local"), "data"), here)


def test_an_http_input(remote, here, http):
    """(b) http:// from a server on the requester's side: every node fetches it itself."""
    check_scenario(remote, spec_of(here, unique("http"), served_folder(http)), here)


def test_an_ipfs_cid_added_on_the_requester(remote, here):
    """(c) `bflow add` puts the folder into the requester's content store; the nodes have
    neither that store nor an IPFS_GATEWAY to read the CID from."""
    added = remote.bflow("add", put_files(here / "data"))
    assert added.code == 0, added.stderr
    cid = added.stdout.strip()
    check_scenario(remote, spec_of(here, unique("ipfs"), f"ipfs://{cid}"), here)


def test_an_s3_input(remote, here, moto):
    """(d) s3:// on a moto server: each node reads it with the AWS settings it started with."""
    require_or_skip(moto is not None, "moto's S3 server", MOTO_HINT)
    bucket = moto.bucket({f"data/{name}": text.encode() for name, text in FILES.items()})
    check_scenario(remote, spec_of(here, unique("s3"), f"s3://{bucket}/data"), here)


def test_a_second_pipeline_reads_the_first_with_pipeline_url(remote, here, http):
    """(e) Two pipelines in one file: `first` reads over HTTP (which reaches the nodes), then
    `second` reads `pipeline://first`, whose output is in the requester's content store."""
    first, second = unique("first"), unique("second")
    spec = here / "chain.yaml"
    spec.write_text(f"""\
pipeline: {first}
input: {{name: in, url: '{served_folder(http)}', glob: '/*.txt'}}
transform: {{cmd: [sh, -c, '{LOCAL_CMD}']}}
---
pipeline: {second}
input: {{name: up, url: 'pipeline://{first}', glob: '/*.txt'}}
transform: {{cmd: [sh, -c, 'for f in $BFLOW_INPUTS/up/*; do n=${{f##*/}}; echo "$n $(cat $f)"; sed "s/$/!/" $f > $BFLOW_OUTPUTS/$n; done']}}
""")
    run = run_remote(remote, spec)
    jobs = {j["pipeline"]: j for j in run["result"]["jobs"]}
    assert_completed_remotely(remote, jobs[first], run["stderr"])
    assert_completed_remotely(remote, jobs[second], run["stderr"])
    assert run["code"] == 0, run["stderr"]
    assert jobs[second]["upstreams"] == [{"pipeline": first, "job": jobs[first]["id"], "cid": jobs[first]["cid"]}]
    assert_outputs(remote, jobs[first], here, UPPER, LISTING)
    assert_outputs(remote, jobs[second], here, {n: t.replace("\n", "!\n") for n, t in UPPER.items()},
                   "".join(f"{n} {t}" for n, t in UPPER.items()))


def test_the_docker_executor(remote, here, http):
    """(f) The same job in a container of the busybox test image, on the remote nodes: the
    node stages the inputs in its own home, which dockerd (outside any namespace) mounts."""
    from bacalhau_flow.testing.docker_image import ensure_test_image

    image = ensure_test_image()  # skips (fails in CI) without an engine or busybox
    spec = spec_of(here, unique("docker"), served_folder(http), f"image: {image}, cmd: [sh, -c, '{DOCKER_CMD}']")
    check_scenario(remote, spec, here)
