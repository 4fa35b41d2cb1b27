"""The scenario table every executor, transport and input source is run through: each entry is
(transform YAML, expected exit code, expected stdout, expected output (path, text) or None),
over an input folder `in` holding `fruit.txt` with LINES."""

LINES = "apple 3\nbanana 12\ncherry 7\napple 9\n"

SCENARIOS = {
    "cat to stdout": ("cmd: [sh, -c, 'cat $BFLOW_INPUTS/in/*']", 0, LINES, None),
    "write to outputs": ("cmd: [sh, -c, 'wc -l < $BFLOW_INPUTS/in/fruit.txt > $BFLOW_OUTPUTS/lines']", 0, "",
                         ("lines", "4\n")),
    "grep": ("cmd: [grep, apple, /dev/stdin]\n  stdin: \"" + LINES.replace("\n", "\\n") + "\"", 0,
             "apple 3\napple 9\n", None),
    "sed": ("cmd: [sh, -c, 'sed -e s/apple/pear/ $BFLOW_INPUTS/in/fruit.txt']", 0, LINES.replace("apple", "pear"),
            None),
    "awk": ("cmd: [sh, -c, 'awk \"{s += \\$2} END {print s}\" $BFLOW_INPUTS/in/fruit.txt']", 0, "31\n", None),
    "failing command": ("cmd: [sh, -c, 'echo partial; echo broken >&2; exit 4']", 4, "partial\n", None),
}


def run_scenario(name: str, tmp_path, *, url: str = "in", image: str | None = None,
                 network: str | None = None, node_ids: set[str] | None = None) -> dict:
    """Run scenario `name` with `bflow run --reprocess` (the same job may have run on another
    transport or source: it must run again, not be reused) over `url` (default: the folder `in`
    holding fruit.txt, made here if missing), in `image` when given, on `network` (default: embedded),
    and check what `bflow get` brings back. `node_ids`: the nodes the shard must have run on.
    Returns the job's JSON."""
    from cli_helpers import bflow, write_spec

    transform, exit_code, stdout, output = SCENARIOS[name]
    if url == "in" and not (tmp_path / "in" / "fruit.txt").exists():
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / "fruit.txt").write_text(LINES)
    image_line = f"  image: {image}\n" if image else ""
    spec = write_spec(tmp_path, f"pipeline: scenario\ninput: {{name: in, url: '{url}', glob: '/fruit.txt'}}\n"
                                f"transform:\n{image_line}  {transform}\n")
    r = bflow("run", spec, "--json", "--reprocess", *(("--network", network) if network else ()))
    job = r.json()
    assert job["shards"][0]["exit_code"] == exit_code, r.stderr
    assert job["shards"][0]["state"] == ("completed" if exit_code == 0 else "failed")  # ran, not reused
    assert r.code == (0 if exit_code == 0 else 1)
    got = tmp_path / "got"
    assert bflow("get", job["id"], "-o", got).code == 0
    assert (got / "stdout").read_text() == stdout
    if exit_code:
        assert (got / "stderr").read_text() == "broken\n"
        assert (got / "shards" / "0" / "exit_code").read_text().strip() == str(exit_code)
    if output:
        assert (got / "outputs" / output[0]).read_text() == output[1]
    if node_ids is not None:
        assert job["shards"][0]["node"] in node_ids
    return job
