"""CPU a node spends on its queue of shards waiting for room, beside the same shards with room
for all, in one run.

A node accepts more shards than it can run at once and queues the rest (network/node.py,
network/capacity.py); a release hands the freed room on. For N shards asking 0.1 cpu each of a
node with 2 cpus (20 at a time; what an embedded node of a 1,000-shard job holds), each holding
its room for a random 0.5-10 ms:
- queued: the node as it is, N shards arriving at once, N - 20 of them waiting;
- room:   the same shards on a node with room for all of them (no queue): the baseline.
Prints the CPU seconds of each and queued/room. The queue used to wake every waiter on every
release (a Condition's notify_all), quadratic in its length: 0.50 s beside ~0.07 s of CPU for
1,000 shards, measured on 2026-12-06.

    python bench/capacity_bench.py [N ...]     (default: 100 1000 10000)
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

from bacalhau_flow.network.capacity import CapacityManager
from bacalhau_flow.network.messages import Capacity, ResourceAsk

ASK = ResourceAsk(cpu=0.1, memory=0, disk=0, gpu=0)


async def shards(n: int, cpus: float, holds: list[float]) -> float:
    """CPU seconds for n shards to reserve, hold their room for `holds[i]` s and release it."""
    cap = CapacityManager(Capacity(cpu=cpus, memory=2**30, disk=2**30, gpu=0))

    async def one(hold: float) -> None:
        gpus = await cap.reserve(ASK)
        await asyncio.sleep(hold)
        await cap.release(ASK, gpus)

    start = time.process_time()
    await asyncio.gather(*(one(hold) for hold in holds[:n]))
    return time.process_time() - start


def main(sizes: list[int]) -> None:
    print(f"{'shards':>7} {'queued cpu s':>13} {'room cpu s':>11} {'queued/room':>12}")
    for n in sizes:
        holds = [random.uniform(0.0005, 0.01) for _ in range(n)]
        queued = asyncio.run(shards(n, 2, holds))
        room = asyncio.run(shards(n, n * ASK.cpu, holds))
        print(f"{n:>7} {queued:>13.3f} {room:>11.3f} {queued / max(room, 1e-9):>12.2f}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000, 10000])
