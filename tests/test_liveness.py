"""services/liveness.py: a node that keeps requests waiting is pinged once; no answer ejects it
for a while, an answer keeps it (slow is not dead)."""

from __future__ import annotations

import asyncio
import time

from p2pkube.services.liveness import NodeProbes
from p2pkube.services.settings import ServiceSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


SETTINGS = ServiceSettings(ping_after=0.2, ping_timeout=0.05, ejection_period=5.0)


async def test_a_silent_node_is_pinged_once_then_ejected_for_the_period() -> None:
    pings: list[str] = []

    async def silent(node: str) -> None:
        pings.append(node)
        await asyncio.sleep(10)  # never answers

    clock = Clock()
    probes = NodeProbes(silent, SETTINGS, clock=clock)
    assert probes.alive("dead", waited=0.1)  # too early to ask
    await asyncio.sleep(0)
    assert pings == []
    for _ in range(5):  # five requests waiting on it: one ping
        assert probes.alive("dead", waited=0.25)
    await asyncio.sleep(0.15)
    assert pings == ["dead"]
    assert not probes.alive("dead", waited=0.3)
    assert probes.ejected("dead") and not probes.ejected("other")
    clock.now += 5.1
    assert not probes.ejected("dead")  # the period is over: routed to again
    assert probes.stats() == {"probes": 1, "ejections": 1, "ejected": 0, "lateTimers": 0}
    await probes.close()


async def test_a_slow_node_that_answers_its_ping_is_not_ejected() -> None:
    async def answers(_node: str) -> None:
        await asyncio.sleep(0.01)

    probes = NodeProbes(answers, SETTINGS)
    assert probes.alive("slow", waited=1.0)
    await asyncio.sleep(0.1)
    assert probes.alive("slow", waited=2.0)
    assert not probes.ejected("slow")
    await asyncio.sleep(0.1)
    assert probes.stats()["probes"] == 2 and probes.stats()["ejections"] == 0
    await probes.close()


async def test_a_failed_call_ejects() -> None:
    async def refused(_node: str) -> None:
        raise ConnectionError("unreachable")

    probes = NodeProbes(refused, SETTINGS)
    probes.alive("gone", waited=0.5)
    await asyncio.sleep(0.01)
    assert probes.ejected("gone")
    await probes.close()


async def test_close_cancels_running_pings() -> None:
    started = asyncio.Event()

    async def hangs(_node: str) -> None:
        started.set()
        await asyncio.sleep(10)

    probes = NodeProbes(hangs, ServiceSettings(ping_after=0.0, ping_timeout=30))
    probes.alive("n", waited=1.0)
    await asyncio.wait_for(started.wait(), 1)
    await asyncio.wait_for(probes.close(), 1)
    assert probes.stats()["ejections"] == 0


async def test_a_ping_timer_that_fired_late_waits_again_instead_of_ejecting() -> None:
    """This node's own loop stalled past the ping's timeout (the answer came meanwhile but was
    not read yet): that is no evidence against the pinged node."""

    async def answers_after_a_stall(_node: str) -> None:
        time.sleep(0.2)  # noqa: ASYNC251 - the stall itself: the 0.05 s timer fires 0.15 s late
        await asyncio.sleep(0.01)

    probes = NodeProbes(answers_after_a_stall, SETTINGS)
    probes.alive("n", waited=1.0)
    await asyncio.sleep(0.5)
    assert not probes.ejected("n")
    assert probes.stats()["lateTimers"] == 1 and probes.stats()["ejections"] == 0
    await probes.close()
