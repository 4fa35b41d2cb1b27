"""The examples in pipelines/ run end to end, and what they leave is what PRODUCT.md promises."""

import json

from cli_helpers import PIPELINES, bflow


def test_wordcount_example_counts_words_per_book_and_merges_outputs(tmp_path):
    out = tmp_path / "results"
    r = bflow("run", PIPELINES / "wordcount.yaml", "--output", out)
    assert r.code == 0, r.stderr
    books = sorted((PIPELINES / "data" / "books").glob("*.txt"))
    expected = [f"{b.name} {len(b.read_text().split())}" for b in books]
    assert r.stdout.splitlines() == expected
    # counts.txt written by every shard, joined in shard order (conflict: concat)
    assert (out / "outputs" / "counts.txt").read_text().splitlines() == expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "completed" and len(manifest["shards"]) == 3
    assert all(s["state"] == "completed" and s["exit_code"] == 0 and s["cid"] for s in manifest["shards"])
    assert (out / "shards" / "1" / "stdout").read_text() == expected[1] + "\n"
    assert (out / "shards" / "1" / "exit_code").read_text().strip() == "0"
    assert (out / "shards" / "2" / "outputs" / "counts.txt").read_text() == expected[2] + "\n"


def test_batched_example_gives_each_shard_five_datums(tmp_path):
    plan = bflow("plan", PIPELINES / "batched.yaml", "--json").json()
    shards = plan["pipelines"][0]["shards"]
    assert [len(s["datums"]) for s in shards] == [5, 5, 5, 5]
    assert shards[0]["datums"][0] == {"numbers": ["/n01.txt"]}
    r = bflow("run", PIPELINES / "batched.yaml", "--json")
    assert r.code == 0, r.stderr
    job = r.json()
    assert job["state"] == "completed" and [s["index"] for s in job["shards"]] == [0, 1, 2, 3]
    out = tmp_path / "got"
    assert bflow("get", job["id"][:12], "-o", out).code == 0
    sums = [int((out / "outputs" / f"sum-{i}.txt").read_text()) for i in range(4)]
    assert sums == [7 * sum(range(1 + 5 * i, 6 + 5 * i)) for i in range(4)]
    assert "shard 2 of 4" in (out / "stdout").read_text()


def test_failing_example_keeps_every_shards_logs_and_the_good_outputs(tmp_path):
    r = bflow("run", PIPELINES / "fail-some.yaml", "--json")
    assert r.code == 1
    job = r.json()
    assert job["state"] == "failed"
    states = {s["index"]: (s["state"], s["exit_code"]) for s in job["shards"]}
    # n01=7 odd, n02=14 even, n03=21 odd, n04=28 even
    assert states == {0: ("failed", 3), 1: ("completed", 0), 2: ("failed", 3), 3: ("completed", 0)}
    out = tmp_path / "got"
    bflow("get", job["id"], "-o", out)
    assert sorted(p.name for p in (out / "outputs").iterdir()) == ["even-1.txt", "even-3.txt"]
    assert (out / "shards" / "0" / "stderr").read_text() == "odd number 7: failing on purpose\n"
    assert (out / "shards" / "0" / "stdout").read_text() == "shard 0 read 7\n"
    assert (out / "shards" / "0" / "exit_code").read_text().strip() == "3"
    logs = bflow("logs", job["id"], "--shard", "2")
    assert logs.stdout == "shard 2 read 21\n" and "odd number 21" in logs.stderr


def test_list_and_describe_show_jobs_by_prefix():
    r = bflow("run", PIPELINES / "wordcount.yaml", "--json")
    job = r.json()
    listed = bflow("list", "--json").json()
    assert {"id": job["id"], "pipeline": "wordcount", "state": "completed"}.items() <= \
        next(j for j in listed if j["id"] == job["id"]).items()
    described = bflow("describe", job["id"][:10], "--json").json()
    assert described["cid"] == job["cid"] and described["shards"] == job["shards"]
    human = bflow("describe", job["id"][:10])
    assert job["id"] in human.stdout and "completed" in human.stdout


def test_join_example_pairs_each_book_with_its_author(tmp_path):
    plan = bflow("plan", PIPELINES / "join.yaml", "--json").json()
    datums = [d for s in plan["pipelines"][0]["shards"] for d in s["datums"]]
    assert datums[0] == {"books": ["/alice.txt"], "authors": ["/alice.author"]}
    r = bflow("run", PIPELINES / "join.yaml")
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["alice by Lewis Carroll: 43 words", "moby by Herman Melville: 43 words",
                                     "pride by Jane Austen: 23 words"]


def test_wasm_example_runs_a_module_per_shard(tmp_path):
    out = tmp_path / "results"
    r = bflow("run", PIPELINES / "wasm-greet.yaml", "--output", out)
    assert r.code == 0, r.stderr
    assert r.stdout == "hello from wasm\n" * 3
    assert (out / "outputs" / "greeting.txt").read_text() == "hello from wasm\n" * 3


def test_docker_example_counts_words_in_a_container(tmp_path):
    from bacalhau_flow.testing.docker_image import ensure_test_image

    ensure_test_image()
    r = bflow("run", PIPELINES / "docker-wordcount.yaml")
    assert r.code == 0, r.stderr
    local = bflow("run", PIPELINES / "wordcount.yaml")
    assert r.stdout == local.stdout and r.stdout.count("\n") == 3
