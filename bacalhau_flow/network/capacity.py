"""A node's capacity: reserved when a shard is accepted, freed on every end state."""

from __future__ import annotations

import asyncio
import os

from .messages import Capacity, ResourceAsk


def machine_capacity(gpus: int = 0) -> Capacity:
    """Defaults from this machine: its cores, its memory, its free disk under /."""
    cpu = float(os.cpu_count() or 1)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 4 * 2**30
    stat = os.statvfs("/")
    return Capacity(cpu=cpu, memory=memory, disk=stat.f_bavail * stat.f_frsize, gpu=gpus)


class CapacityManager:
    def __init__(self, total: Capacity):
        self.total = total
        self.free = total.model_copy()
        self._changed = asyncio.Condition()

    def could_ever_fit(self, ask: ResourceAsk) -> bool:
        return self.total.fits(ask)

    def try_reserve(self, ask: ResourceAsk) -> bool:
        if not self.free.fits(ask):
            return False
        self._apply(ask, -1)
        return True

    async def reserve(self, ask: ResourceAsk) -> None:
        """Wait until `ask` fits, then reserve it. Callers check could_ever_fit first."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.free.fits(ask))
            self._apply(ask, -1)

    async def release(self, ask: ResourceAsk) -> None:
        async with self._changed:
            self._apply(ask, +1)
            self._changed.notify_all()

    def _apply(self, ask: ResourceAsk, sign: int) -> None:
        f = self.free
        f.cpu = round(f.cpu + sign * ask.cpu, 6)
        f.memory += sign * ask.memory
        f.disk += sign * ask.disk
        f.gpu += sign * ask.gpu
