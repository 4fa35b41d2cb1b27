"""A node's capacity: reserved when a shard is accepted, freed on every end state."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

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
    devices it reserved (GPU i of a node is device i of its machine)."""

    def __init__(self, total: Capacity):
        self.total = total
        self.free = total.model_copy()
        self.free_gpus: list[int] = list(range(total.gpu))
        self._changed = asyncio.Condition()

    def could_ever_fit(self, ask: ResourceAsk) -> bool:
        return self.total.fits(ask)

    async def reserve(self, ask: ResourceAsk) -> list[int]:
        """Wait until `ask` fits, then reserve it; return the GPU indices it was given.
        Callers check could_ever_fit first."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.free.fits(ask))
            self._apply(ask, -1)
            gpus, self.free_gpus = self.free_gpus[: ask.gpu], self.free_gpus[ask.gpu:]
            return gpus

    async def release(self, ask: ResourceAsk, gpus: list[int]) -> None:
        async with self._changed:
            self._apply(ask, +1)
            self.free_gpus = sorted(self.free_gpus + gpus)
            self._changed.notify_all()

    def _apply(self, ask: ResourceAsk, sign: int) -> None:
        f = self.free
        f.cpu = round(f.cpu + sign * ask.cpu, 6)
        f.memory += sign * ask.memory
        f.disk += sign * ask.disk
        f.gpu += sign * ask.gpu
