"""A node's capacity: reserved when a shard is accepted, freed on every end state."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
from collections import deque

from .messages import Capacity, ResourceAsk


def detect_gpus() -> int:
    """How many NVIDIA GPUs `nvidia-smi` lists; 0 when it is absent or fails."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.strip().isdigit()) if out.returncode == 0 else 0


def machine_capacity(gpus: int = 0) -> Capacity:
    """Defaults from this machine: its cores, its memory, its free disk under /, and
    `gpus` GPUs (callers pass `detect_gpus()` or a configured count)."""
    cpu = float(os.cpu_count() or 1)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 4 * 2**30
    stat = os.statvfs("/")
    return Capacity(cpu=cpu, memory=memory, disk=stat.f_bavail * stat.f_frsize, gpu=gpus)


class CapacityManager:
    """Counts CPU, memory and disk; hands out GPUs by index, so a shard gets exactly the
    devices it reserved (GPU i of a node is device i of its machine).

    Shards that do not fit yet wait in the order they came, in one line per size of ask. A
    release hands the freed room to the waiters that fit, first come first served, without
    waking the others or passing over the whole queue: a node with thousands of queued shards
    pays a few steps a release, not a wake-up of every waiter (as a Condition's notify_all
    was: quadratic in the queue, ~0.5 s of CPU for 1,000 queued shards)."""

    def __init__(self, total: Capacity):
        self.total = total
        self.free = total.model_copy()
        self.free_gpus: list[int] = list(range(total.gpu))
        self._lines: dict[tuple, deque[tuple[int, ResourceAsk, asyncio.Future]]] = {}
        self._arrivals = itertools.count()

    def could_ever_fit(self, ask: ResourceAsk) -> bool:
        return self.total.fits(ask)

    async def reserve(self, ask: ResourceAsk) -> list[int]:
        """Wait until `ask` fits, then reserve it; return the GPU indices it was given.
        Callers check could_ever_fit first. A shard that fits now takes its room at once,
        even while bigger ones wait."""
        if self.free.fits(ask):
            return self._take(ask)
        granted: asyncio.Future = asyncio.get_running_loop().create_future()
        key = (ask.cpu, ask.memory, ask.disk, ask.gpu)
        self._lines.setdefault(key, deque()).append((next(self._arrivals), ask, granted))
        try:
            return await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():  # room given as it was cancelled: give it back
                self._give_back(ask, granted.result())
            else:
                granted.cancel()  # its line drops it when it comes to the front
            raise

    async def release(self, ask: ResourceAsk, gpus: list[int]) -> None:
        self._give_back(ask, gpus)

    def _take(self, ask: ResourceAsk) -> list[int]:
        self._apply(ask, -1)
        gpus, self.free_gpus = self.free_gpus[: ask.gpu], self.free_gpus[ask.gpu:]
        return gpus

    def _give_back(self, ask: ResourceAsk, gpus: list[int]) -> None:
        self._apply(ask, +1)
        self.free_gpus = sorted(self.free_gpus + gpus)
        self._hand_out()

    def _hand_out(self) -> None:
        """Give the free room to the waiter that came first among the fronts of the lines that
        fit, again and again. Room only shrinks meanwhile, so a line whose front did not fit
        is not tried again."""
        open_lines = list(self._lines)
        while open_lines:
            first = None
            for key in list(open_lines):
                line = self._lines[key]
                while line and line[0][2].done():  # cancelled while it waited
                    line.popleft()
                if not line:
                    del self._lines[key]
                    open_lines.remove(key)
                elif not self.free.fits(line[0][1]):
                    open_lines.remove(key)
                elif first is None or line[0][0] < self._lines[first][0][0]:
                    first = key
            if first is None:
                return
            _, ask, granted = self._lines[first].popleft()
            granted.set_result(self._take(ask))

    def _apply(self, ask: ResourceAsk, sign: int) -> None:
        f = self.free
        f.cpu = round(f.cpu + sign * ask.cpu, 6)
        f.memory += sign * ask.memory
        f.disk += sign * ask.disk
        f.gpu += sign * ask.gpu
