"""The live display of `bflow run`: rows and counts on a terminal, plain lines elsewhere, and
the merged stdout of several pipelines labelled by pipeline."""

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import uuid

from cli_helpers import bflow, write_spec
from rich.console import Console

from bacalhau_flow.cli.progress import RunDisplay

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def chained(tmp_path, up: str, down: str, up_cmd: str) -> "os.PathLike":
    """`up` (three shards, one per file, each writing a file) and `down`, which reads up's
    output as one datum."""
    (tmp_path / "d").mkdir(exist_ok=True)
    for name in "abc":
        (tmp_path / "d" / f"{name}.txt").write_text(name)
    return write_spec(tmp_path, f"""
pipeline: {up}
input: {{url: d, glob: '/*.txt'}}
transform: {{cmd: [sh, -c, '{up_cmd} | tee "$BFLOW_OUTPUTS/$BFLOW_SHARD_ID.txt"']}}
---
pipeline: {down}
input: {{url: 'pipeline://{up}'}}
transform: {{cmd: [sh, -c, 'echo "down saw $(ls $BFLOW_INPUTS/{up} | wc -l) files"']}}
""")


def run_on_a_terminal(*args, timeout: float = 120) -> tuple[int, str, str]:
    """`bflow ARGS` in a new process whose stderr is a pseudo-terminal of 120 columns (stdout
    a pipe, as `bflow run ... > file` has it): its exit code, what the terminal showed (ANSI
    codes removed, every frame kept) and its stdout."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TTY_COMPATIBLE")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-m", "bacalhau_flow.cli", *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal is gone
                    break
                if not data:
                    break
                shown += data
            elif proc.poll() is not None:
                break
        stdout = proc.communicate(timeout=max(deadline - time.monotonic(), 1))[0]
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, ANSI.sub("", shown.decode(errors="replace")), stdout.decode()


def test_a_terminal_shows_what_the_run_waits_on_then_a_row_per_pipeline_with_counts(tmp_path):
    up, down = unique("up"), unique("down")
    spec = chained(tmp_path, up, down, 'sleep $BFLOW_SHARD_INDEX; echo "up $BFLOW_SHARD_INDEX"')
    code, shown, stdout = run_on_a_terminal("run", spec)
    assert code == 0, shown
    assert "Traceback" not in shown
    assert "loading Prefect" in shown  # the line for what it waits on before the first shard
    assert f"waiting for {up}" in shown  # the downstream's row is there from the start
    assert re.search(rf"{up}\s.*\b[1-3] running · [0-2] queued", shown), shown  # while shards run
    assert re.search(rf"{up}\s.*\b[1-2] done · [0-1] running .*/s\s+ETA \d+s", shown), shown  # rate and ETA
    assert re.search(rf"{up}\s.*3/3\s+3 done · 0 running · 0 queued", shown), shown
    assert re.search(rf"{down}\s.*1/1\s+1 done", shown), shown
    # stdout stays out of the terminal, each line labelled by its pipeline (two pipelines here)
    assert stdout.splitlines() == [f"{up} | up 0", f"{up} | up 1", f"{up} | up 2", f"{down} | down saw 3 files"]


def test_without_a_terminal_the_progress_is_plain_lines(tmp_path):
    up, down = unique("up"), unique("down")
    r = bflow("run", chained(tmp_path, up, down, 'echo "up $BFLOW_SHARD_INDEX"'))
    assert r.code == 0, r.stderr
    assert "\x1b[" not in r.stderr  # no escape codes in a log file
    lines = r.stderr.splitlines()
    assert f"{up}: 3 shards" in lines and f"{down}: 1 shard" in lines
    assert any(re.fullmatch(rf"{up}: finished, 3/3 done, 0 failed, 0 reused, [\d.]+ shards/s in (\d+m)?\d+s", x)
               for x in lines), r.stderr
    assert lines.index(f"{down}: 1 shard") > lines.index(f"{up}: 3 shards")
    assert r.stdout.splitlines()[-1] == f"{down} | down saw 3 files"


def test_one_pipeline_prints_its_stdout_unlabelled(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("a")
    name = unique("single")
    r = bflow("run", write_spec(tmp_path, f"pipeline: {name}\ninput: {{url: d}}\n"
                                          "transform: {cmd: [sh, -c, 'printf no-newline']}\n"))
    assert r.code == 0, r.stderr
    assert r.stdout == "no-newline"  # byte for byte
    again = bflow("run", tmp_path / "spec.yaml")  # nothing changed: the one shard is reused
    assert "1/1 shard completed (1 reused from earlier jobs)" in again.stderr
    assert "nothing changed: 1 of 1 shard reused" in again.stderr


def terminal(width: int = 120) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=width, color_system=None), buffer


def test_counts_follow_each_shards_latest_state_retries_included():
    console, shown = terminal()
    with RunDisplay({"a": [], "b": ["a"]}, console=console) as display:
        with display.job("a", 4) as hook:
            for index, state in [(0, "running"), (1, "running"), (0, "completed"), (2, "skipped"),
                                 (1, "retrying"), (1, "running"), (3, "running")]:
                hook(index, state)
            row = display.rows["a"]
            assert row.numbers() == {"done": 1, "running": 2, "queued": 0, "failed": 0, "reused": 1,
                                     "cancelled": 0}
            assert row.rate(time.monotonic()) > 0 and row.eta(time.monotonic()) is not None
            time.sleep(0.7)  # a few frames at 4 a second
            hook(1, "failed")
            hook(3, "completed")
        assert row.numbers() == {"done": 2, "running": 0, "queued": 0, "failed": 1, "reused": 1, "cancelled": 0}
        assert row.outcome == "failed"
    frames = ANSI.sub("", shown.getvalue())
    assert re.search(r"a\s.*2/4\s+1 done · 2 running · 0 queued · 1 reused", frames), frames
    assert re.search(r"b\s+waiting for a", frames), frames
    assert re.search(r"a\s.*4/4\s+2 done · 0 running · 0 queued · 1 failed · 1 reused", frames), frames


def test_plain_lines_repeat_the_counts_while_they_change():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with RunDisplay({"p": []}, console=console, every=0.3) as display:
        assert not display.live
        with display.job("p", 3) as hook:
            hook(0, "running")
            hook(0, "completed")
            time.sleep(1.0)
            hook(1, "running")
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "p: 3 shards"
    assert any(line.startswith("p: 1/3 done, 0 running, 2 queued, 0 failed, 0 reused") for line in lines), lines
    assert lines[-1].startswith("p: finished, 1/3 done, 0 failed, 0 reused")
    assert sum("1/3 done, 0 running" in line for line in lines) == 1  # printed once: unchanged since
