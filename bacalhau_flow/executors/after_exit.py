"""A helper process that acts once this process has ended, however it ends (a SIGKILL too).

The helper's stdin is a pipe whose write end only this process holds (a pipe is not inherited
by later children: close_fds), so it reads end of file when this process ends, and then does
its work. It runs in a session of its own, so a Ctrl-C to this process's terminal leaves it be.
It ends a node's commands (executors/cgroups.py) and its containers (executors/docker_reaper.py).
"""

from __future__ import annotations

import subprocess


def run_after_exit(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen | None:
    """Start `argv`, which waits for end of file on its stdin first; None where it cannot start.
    Keep the returned Popen referenced: its pipe must stay open for as long as this process runs."""
    try:
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd="/", env=env, start_new_session=True)
    except OSError:
        return None
