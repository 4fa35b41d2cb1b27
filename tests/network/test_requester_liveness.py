"""A node stops the attempts of a requester it no longer hears from, and only counts that
silence while it is itself connected (network/liveness.py)."""

import asyncio
import math
import time

from bacalhau_flow.network.liveness import Beacon, RequesterWatch
from bacalhau_flow.transports.memory import MemoryHub, MemoryTransport


class Switchable(MemoryTransport):
    """A memory transport whose connection can be cut (`up_since` is inf while cut)."""

    cut = False
    back_at = 0.0

    def up_since(self) -> float:
        return math.inf if self.cut else self.back_at


def watch_pair(silent: float = 0.6):
    hub = MemoryHub()
    requester, node = MemoryTransport(hub=hub), Switchable(hub=hub)
    requester.node_id = "r-requester"
    stopped: list[str] = []
    watch = RequesterWatch(node, stopped.extend, silent_seconds=silent, every=0.05)
    return requester, node, watch, stopped


async def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


def test_attempts_of_a_requester_that_keeps_naming_their_job_go_on():
    async def scenario():
        requester, node, watch, stopped = watch_pair()
        beacon = Beacon(requester, requester.node_id, lambda: {"j-1"}, every=0.1)
        beacon.start()
        watch.follow(requester.node_id, "j-1", "j-1/0/1")
        await asyncio.sleep(1.5)  # well past the silence limit
        await beacon.stop()
        await watch.stop()
        return stopped

    assert asyncio.run(scenario()) == []


def test_attempts_of_a_silent_requester_are_stopped_and_only_theirs():
    async def scenario():
        requester, node, watch, stopped = watch_pair()
        other = MemoryTransport(hub=requester.hub)
        other.node_id = "r-other"
        beacon = Beacon(other, other.node_id, lambda: {"j-2"}, every=0.1)
        beacon.start()
        watch.follow(requester.node_id, "j-1", "j-1/0/1")  # this requester says nothing any more
        watch.follow(other.node_id, "j-2", "j-2/0/1")
        started = time.monotonic()
        assert await wait_until(lambda: stopped, 5)
        took = time.monotonic() - started
        await asyncio.sleep(0.5)
        await beacon.stop()
        await watch.stop()
        return stopped, took, watch.silenced("j-1/0/1")

    stopped, took, silenced = asyncio.run(scenario())
    assert stopped == ["j-1/0/1"] and silenced
    assert 0.5 <= took < 3


def test_a_beacon_sent_by_someone_else_does_not_speak_for_a_requester():
    """On a signed network the sender is the key's id (transports/signing.py); the watch takes
    a beacon on a requester's subject only when that sender is the requester."""
    from bacalhau_flow.network.liveness import alive_subject
    from bacalhau_flow.transports.base import Envelope

    async def scenario():
        requester, node, watch, stopped = watch_pair()
        watch.follow(requester.node_id, "j-1", "j-1/0/1")
        for _ in range(20):
            await requester.publish(alive_subject(requester.node_id),
                                    Envelope("alive", {"jobs": ["j-1"]}, sender="n-someone-else"))
            await asyncio.sleep(0.1)
        await watch.stop()
        return stopped

    assert asyncio.run(scenario()) == ["j-1/0/1"]


def test_silence_while_the_node_is_cut_off_is_not_counted():
    async def scenario():
        requester, node, watch, stopped = watch_pair(silent=0.6)
        watch.follow(requester.node_id, "j-1", "j-1/0/1")
        node.cut = True  # an outage: the node hears nobody
        await asyncio.sleep(2.0)
        cut_off_stops = list(stopped)
        node.cut, node.back_at = False, time.monotonic()  # back: the requester gets a limit from now
        await asyncio.sleep(0.3)
        early = list(stopped)
        assert await wait_until(lambda: stopped, 5)  # and it never says anything: stopped
        await watch.stop()
        return cut_off_stops, early, stopped

    cut_off_stops, early, stopped = asyncio.run(scenario())
    assert cut_off_stops == [] and early == []
    assert stopped == ["j-1/0/1"]


def test_a_forgotten_attempt_is_never_stopped():
    async def scenario():
        requester, node, watch, stopped = watch_pair()
        watch.follow(requester.node_id, "j-1", "j-1/0/1")
        watch.forget("j-1/0/1")  # its command ended: its result is being offered
        await asyncio.sleep(1.5)
        await watch.stop()
        return stopped

    assert asyncio.run(scenario()) == []
