"""A node empties an ended attempt's work folder and gives it to the next attempt
(network/work_folders.py): the next command sees the folder as new, and what a hostile command
did to it (links out, hard links, modes) harms nothing outside and never reaches the next one."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from bacalhau_flow.executors.local import LocalExecutor
from bacalhau_flow.network.messages import InputRef, ResourceAsk, ShardRequest, TransformRef
from bacalhau_flow.network.shard_run import run_shard_attempt
from bacalhau_flow.network.work_folders import FILES, FOLDERS, KEEP, WorkFolders
from bacalhau_flow.storage import ContentStore

# What a command sees of its work folder: every path in it with its type and mode
LOOK = "find . -printf '%p %y %m\\n' | sort"


def attempt(tmp_path: Path, script: str, index: int, env: dict[str, str] | None = None):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "a.txt").write_text("alpha\n")
    request = ShardRequest(job_id="j-folders", pipeline="p", shard_index=index, shard_id=f"s{index}", shard_count=9,
                           transform=TransformRef(cmd=["sh", "-c", script], env=env or {}),
                           inputs=[InputRef(name="data", url=str(data))], datums=[{"data": ["/a.txt"]}],
                           resources=ResourceAsk(cpu=0.1))
    store = ContentStore(tmp_path / "store")
    result = run_shard_attempt(request, LocalExecutor(), store, tmp_path / "work", "n-test")
    return result, store.cat(result.stdout_cid).decode()


def spares(tmp_path: Path) -> list[Path]:
    """The emptied folders kept for the next attempts."""
    folder = WorkFolders.at(tmp_path / "work").spares
    return list(folder.iterdir()) if folder.exists() else []


def test_the_next_attempt_gets_the_folder_emptied_as_new(tmp_path):
    first, seen = attempt(tmp_path, LOOK + "; echo out > $BFLOW_OUTPUTS/o; mkdir -p $HOME/.cache/x $TMPDIR/t;"
                          " echo s > $TMPDIR/t/f; chmod 555 $TMPDIR/t; echo beside > ./left; echo err >&2", 0)
    assert first.state == "completed", first.error
    assert len(spares(tmp_path)) == 1
    second, reused = attempt(tmp_path, LOOK, 1)
    assert second.state == "completed", second.error
    assert len(spares(tmp_path)) == 1  # the second attempt took it and gave it back
    assert reused == seen  # the same parts, types and modes: nothing of the first command is left
    assert "./inputs/data/a.txt f 444" in reused and "./stdout f 644" in reused
    assert not list((tmp_path / "work" / "j-folders").iterdir()), "an ended attempt's folder was left in place"


def test_links_out_of_the_folder_are_removed_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious\n")
    (victim / "log.txt").write_text("precious log\n")
    _, seen = attempt(tmp_path, LOOK, 0)
    # outputs and $HOME become links to the victim's folder, stderr a hard link to its file
    hostile = ('rm -rf "$BFLOW_OUTPUTS" "$HOME"; ln -s "$VICTIM" "$BFLOW_OUTPUTS"; ln -s "$VICTIM" "$HOME";'
               ' rm -f stderr; ln "$VICTIM/log.txt" stderr; ln -s "$VICTIM/keep.txt" "$TMPDIR/k"')
    hostile_result, _ = attempt(tmp_path, hostile, 1, env={"VICTIM": str(victim)})
    assert "symlink" in hostile_result.error  # outputs that are a link are refused (storage/unixfs.py)
    assert (victim / "keep.txt").read_text() == "precious\n"
    assert (victim / "log.txt").read_text() == "precious log\n"
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt", "log.txt"]
    assert not spares(tmp_path)  # a folder that held links is not kept
    after, seen_after = attempt(tmp_path, LOOK, 2)
    assert after.state == "completed", after.error
    assert seen_after == seen


def test_a_log_made_a_hard_link_to_another_file_is_not_truncated(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    _, seen = attempt(tmp_path, LOOK, 0)
    result, _ = attempt(tmp_path, 'rm -f stdout; ln "$VICTIM" stdout', 1, env={"VICTIM": str(victim)})
    assert result.state == "completed", result.error
    assert victim.read_text() == "precious\n"
    assert not spares(tmp_path)
    after, seen_after = attempt(tmp_path, LOOK, 2)
    assert seen_after == seen


def test_modes_the_command_took_away_are_given_back(tmp_path):
    _, seen = attempt(tmp_path, LOOK, 0)
    result, _ = attempt(tmp_path, 'mkdir "$BFLOW_OUTPUTS/ro"; chmod 0 "$BFLOW_OUTPUTS/ro" "$HOME" "$TMPDIR";'
                        ' chmod 500 "$BFLOW_OUTPUTS" .', 1)
    assert result.state == "completed", result.error
    assert len(spares(tmp_path)) == 1
    after, seen_after = attempt(tmp_path, LOOK, 2)
    assert after.state == "completed", after.error
    assert seen_after == seen


def test_a_folder_missing_a_part_is_removed_and_the_next_one_made_anew(tmp_path):
    _, seen = attempt(tmp_path, LOOK, 0)
    assert len(spares(tmp_path)) == 1
    attempt(tmp_path, 'rmdir "$TMPDIR"', 1)
    assert not spares(tmp_path)  # the folder that lost a part is not kept
    after, seen_after = attempt(tmp_path, LOOK, 2)
    assert after.state == "completed", after.error
    assert seen_after == seen


def test_a_tree_deeper_than_pythons_recursion_limit_is_emptied_and_the_folder_kept(tmp_path):
    _, seen = attempt(tmp_path, LOOK, 0)
    deep = "/".join(["d"] * 1200)  # 2,400 characters: a path the kernel allows
    try:
        result, _ = attempt(tmp_path, f'mkdir -p "$TMPDIR/{deep}" && echo x > "$TMPDIR/{deep}/f" && chmod -R 555 "$TMPDIR/d"', 1)
        assert result.state == "completed", result.error
        assert len(spares(tmp_path)) == 1
        after, seen_after = attempt(tmp_path, LOOK, 2)
        assert seen_after == seen
    finally:  # what a failure left: pytest's own clean-up of old temporary folders recurses too
        subprocess.run(["rm", "-rf", str(tmp_path / "work")], check=False)


def test_logs_the_command_replaced_by_a_fifo_or_a_link_are_not_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the requester\n")
    outcome = {}
    hostile = threading.Thread(target=lambda: outcome.update(fifo=attempt(
        tmp_path, 'rm -f stdout && mkfifo stdout', 0)), daemon=True)
    hostile.start()
    hostile.join(20)
    assert not hostile.is_alive(), "the node waited on a fifo the command left as its stdout"
    result, shown = outcome["fifo"]
    assert result.state == "completed", result.error
    assert shown == ""
    result, shown = attempt(tmp_path, 'rm -f stdout && ln -s "$SECRET" stdout', 1, env={"SECRET": str(secret)})
    assert result.state == "completed", result.error
    assert shown == ""  # the link is not followed


def test_a_link_left_where_an_attempt_will_work_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious\n")
    (tmp_path / "work" / "j-folders").mkdir(parents=True)
    (tmp_path / "work" / "j-folders" / "0-1").symlink_to(victim)
    result, _ = attempt(tmp_path, 'echo x > "$BFLOW_OUTPUTS/o"', 0)
    assert result.state == "completed", result.error
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]


def test_a_file_left_where_an_attempt_will_work_is_removed(tmp_path):
    """What a node killed mid-attempt may leave (or anything else): a regular file, or a fifo,
    in the folder's place does not fail the next try of that attempt."""
    job = tmp_path / "work" / "j-folders"
    job.mkdir(parents=True)
    (job / "0-1").write_text("left by an earlier try\n")
    os.mkfifo(job / "1-1")
    for index in (0, 1):
        result, _ = attempt(tmp_path, 'echo x > "$BFLOW_OUTPUTS/o"', index)
        assert result.state == "completed", result.error


def test_at_most_keep_spares_and_those_of_gone_processes_are_removed(tmp_path):
    root = tmp_path / "work"
    gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    stale, alive = root / f".spare-{gone}" / "0", root / f".spare-{os.getppid()}" / "0"
    for spare in (stale, alive):
        spare.mkdir(parents=True)
    folders = WorkFolders.at(root)
    assert not stale.parent.exists() and alive.exists()
    works = [root / "j" / str(i) for i in range(KEEP + 6)]
    for work in works:
        folders.take(work)
        assert sorted(p.name for p in work.iterdir()) == sorted((*FOLDERS, *FILES))
    for work in works:
        folders.give_back(work)
    assert len(list(folders.spares.iterdir())) == KEEP
    assert not any(work.exists() for work in works)
    folders.clear()
    assert not folders.spares.exists()
