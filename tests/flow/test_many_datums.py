"""Many datums end to end (issue 13, a small version of bench/throughput_bench.py): a `/**` job
over thousands of one-file datums on the embedded network, whose every output and log must come
back right through the fast paths (local staging in one thread, files made read-only as they
are copied, outputs merged by CID links)."""

from __future__ import annotations

import json
import uuid

from bacalhau_flow.flow.runner import run_pipeline
from bacalhau_flow.home import store_root
from bacalhau_flow.jobs.results import write_results
from bacalhau_flow.spec import load_spec_text
from bacalhau_flow.storage import ContentStore, tree_cid

FILES, PER_FOLDER, BATCH = 3000, 100, 500

CMD = ("cd $BFLOW_INPUTS/data && find . -type f | sort > $BFLOW_OUTPUTS/$BFLOW_SHARD_ID.txt && "
       "mkdir -p $BFLOW_OUTPUTS/all && cat $(find . -type f | sort) > $BFLOW_OUTPUTS/all/lines.txt && "
       "echo shard $BFLOW_SHARD_INDEX && echo err $BFLOW_SHARD_INDEX >&2 && "
       "test $(stat -c %a $(find . -type f | head -1)) = 444 && test $(stat -c %a $(ls -d d* | head -1)) = 555")


def test_thousands_of_datums_keep_every_output_and_log(tmp_path):
    data = tmp_path / "data"
    paths = []
    for i in range(FILES):
        rel = f"d{i // PER_FOLDER:04d}/f{i % PER_FOLDER:02d}.txt"
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text(f"line {i}\n")
        paths.append(rel)
    (pipeline,) = load_spec_text(
        f"pipeline: many-{uuid.uuid4().hex[:8]}\ninput: {{url: {data}, glob: '/**', batch_size: {BATCH}}}\n"
        f"transform: {{cmd: [sh, -c, '{CMD}']}}\noutput: {{conflict: concat}}\n")
    job = run_pipeline(pipeline)
    assert job.state == "completed", job.error
    assert len(job.shards) == FILES // BATCH and all(s.state == "completed" for s in job.shards)

    got = tmp_path / "got"
    write_results(ContentStore(store_root()), job, got)
    for shard in job.shards:  # each shard saw exactly its own datums, in order
        seen = (got / "outputs" / f"{shard.id}.txt").read_text().split()
        assert seen == ["./" + p for p in paths[shard.index * BATCH:(shard.index + 1) * BATCH]]
        assert (got / "shards" / str(shard.index) / "stdout").read_text() == f"shard {shard.index}\n"
    # `conflict: concat` joined every shard's all/lines.txt in shard order: every line once, in order
    assert (got / "outputs" / "all" / "lines.txt").read_text() == "".join(f"line {i}\n" for i in range(FILES))
    assert (got / "stdout").read_text() == "".join(f"shard {i}\n" for i in range(len(job.shards)))
    assert (got / "stderr").read_text() == "".join(f"err {i}\n" for i in range(len(job.shards)))
    assert job.cid == tree_cid(got / "outputs")  # the merged CID is the CID of what `bflow get` wrote
    manifest = json.loads((got / "manifest.json").read_text())
    assert [s["cid"] for s in manifest["shards"]] == [s.cid for s in job.shards]
