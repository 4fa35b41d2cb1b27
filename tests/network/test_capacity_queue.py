"""A node's capacity queue (network/capacity.py): who gets the room a release frees, what a
cancelled waiter leaves behind, and that a release does not pass over the whole queue."""

import asyncio

from bacalhau_flow.network.capacity import CapacityManager
from bacalhau_flow.network.messages import Capacity, ResourceAsk

SMALL = ResourceAsk(cpu=1, memory=0, disk=0, gpu=0)
BIG = ResourceAsk(cpu=2, memory=0, disk=0, gpu=0)


def manager(cpu: float = 2) -> CapacityManager:
    return CapacityManager(Capacity(cpu=cpu, memory=2**30, disk=2**30, gpu=0))


async def queued(cap: CapacityManager, ask: ResourceAsk, order: list, name: str) -> asyncio.Task:
    async def wait() -> None:
        await cap.reserve(ask)
        order.append(name)

    task = asyncio.ensure_future(wait())
    await asyncio.sleep(0)  # now it waits in the queue
    return task


def test_the_room_goes_to_the_waiters_first_come_first_served():
    async def scenario():
        cap, order = manager(), []
        await cap.reserve(BIG)
        waiters = [await queued(cap, SMALL, order, f"s{i}") for i in range(4)]
        await cap.release(BIG, [])
        await asyncio.sleep(0)
        assert order == ["s0", "s1"] and cap.free.cpu == 0
        await cap.release(SMALL, [])
        await asyncio.sleep(0)
        assert order == ["s0", "s1", "s2"]
        for w in waiters:
            w.cancel()

    asyncio.run(scenario())


def test_a_small_ask_that_fits_goes_ahead_of_a_big_one_that_does_not():
    async def scenario():
        cap, order = manager(), []
        await cap.reserve(SMALL)
        big = await queued(cap, BIG, order, "big")
        await cap.reserve(SMALL)  # fits now: taken at once, though the big one waits
        small = await queued(cap, SMALL, order, "small")
        await cap.release(SMALL, [])
        await asyncio.sleep(0)
        assert order == ["small"]  # the big one still does not fit
        await cap.release(SMALL, [])
        await cap.release(SMALL, [])
        await asyncio.sleep(0)
        assert order == ["small", "big"] and cap.free.cpu == 0
        await asyncio.gather(big, small)

    asyncio.run(scenario())


def test_a_waiter_cancelled_in_the_queue_gets_no_room_and_holds_none():
    async def scenario():
        cap, order = manager(cpu=1), []
        await cap.reserve(SMALL)
        gone = await queued(cap, SMALL, order, "gone")
        kept = await queued(cap, SMALL, order, "kept")
        gone.cancel()
        await asyncio.sleep(0)
        await cap.release(SMALL, [])
        await asyncio.wait_for(kept, 1)
        assert order == ["kept"] and cap.free.cpu == 0

    asyncio.run(scenario())


def test_a_waiter_cancelled_after_its_room_was_given_gives_it_back():
    async def scenario():
        cap = manager(cpu=1)
        await cap.reserve(SMALL)
        late = asyncio.ensure_future(cap.reserve(SMALL))
        await asyncio.sleep(0)
        await cap.release(SMALL, [])  # the room is handed to `late`, which has not run yet
        late.cancel()  # ... and is cancelled before it does
        await asyncio.gather(late, return_exceptions=True)
        assert late.cancelled() and cap.free.cpu == 1

    asyncio.run(scenario())


def test_a_release_tries_the_front_of_the_queue_not_every_waiter(monkeypatch):
    """1,000 shards of one size queued: a release that frees room for one tries a few, where
    waking every waiter (as before) cost ~0.5 s of CPU for the queue."""
    tried = []
    fits = Capacity.fits
    monkeypatch.setattr(Capacity, "fits", lambda self, ask: tried.append(1) or fits(self, ask))

    async def scenario():
        cap, order = manager(cpu=1), []
        await cap.reserve(SMALL)
        waiters = [await queued(cap, SMALL, order, str(i)) for i in range(1000)]
        tried.clear()
        await cap.release(SMALL, [])
        await asyncio.sleep(0)
        assert order == ["0"] and len(tried) <= 3
        for w in waiters:
            w.cancel()

    asyncio.run(scenario())
