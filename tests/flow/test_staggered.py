"""Task runs start a few per turn of the runner's loop (flow/staggered.py), so that timers and
messages are served between them; those not started when the runner closes never run."""

import asyncio
import contextvars

from bacalhau_flow.flow.staggered import StaggeredStarts

WHO = contextvars.ContextVar("who", default=None)


def test_at_most_a_batch_starts_per_turn_first_come_first_started():
    async def main():
        loop = asyncio.get_running_loop()
        turns, first_steps, tasks = [0], [], []

        async def ticker():  # one step a turn of the loop
            while True:
                turns[0] += 1
                await asyncio.sleep(0)

        async def shard(i: int):
            first_steps.append((turns[0], i, WHO.get()))

        tick = loop.create_task(ticker())
        starts = StaggeredStarts(loop, batch=8)
        for i in range(50):
            context = contextvars.copy_context()
            context.run(WHO.set, f"shard {i}")
            starts.start(shard(i), context, tasks.append, lambda: None)
        while len(first_steps) < 50:
            await asyncio.sleep(0)
        tick.cancel()
        await asyncio.gather(*tasks)
        return first_steps

    first_steps = asyncio.run(main())
    per_turn: dict[int, int] = {}
    for turn, _, _ in first_steps:
        per_turn[turn] = per_turn.get(turn, 0) + 1
    assert max(per_turn.values()) == 8 and len(per_turn) == 7  # 6 turns of 8, one of 2
    assert [i for _, i, _ in first_steps] == list(range(50))
    assert all(who == f"shard {i}" for _, i, who in first_steps)  # each in its own context


def test_those_not_started_are_dropped_when_the_runner_closes():
    async def main():
        loop = asyncio.get_running_loop()
        ran, dropped, tasks = [], [], []

        async def shard(i: int):
            ran.append(i)

        starts = StaggeredStarts(loop, batch=4)
        for i in range(10):
            starts.start(shard(i), contextvars.copy_context(), tasks.append, lambda i=i: dropped.append(i))
        await asyncio.sleep(0)  # one turn: the first four are started
        starts.drop()
        await asyncio.sleep(0.05)
        return ran, dropped, len(starts)

    ran, dropped, waiting = asyncio.run(main())
    assert ran == [0, 1, 2, 3]
    assert dropped == list(range(4, 10))
    assert waiting == 0
