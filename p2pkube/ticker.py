"""Periodic wake-ups that share one beat, and report how long this process could not run.

**One beat.** An idle agent's cost is mostly its wake-ups: on this project's reference
machine (a 2-core VM) one wake-up of a sleeping asyncio loop costs ~0.25 ms of CPU, about
what handling a message costs, and an agent has many periodic chores (each link's watchdog,
the mesh's maintenance, the state writer's re-check, anti-entropy, resyncs...). Waking for
each on its own schedule costs one wake-up per chore per period. :func:`next_beat` puts
every chore's deadline on one grid per process instead (as Linux's ``round_jiffies``): a
period's instants are ``phase + k x period``, with one random ``phase`` per process, so
chores of the same period wake together, and chores whose periods divide each other (0.5 s,
1 s, 5 s, 10 s) meet on the longer one's instants. The phase is random so that agents on one
host do not all wake at the same instant.

**Stalls** (Lifeguard's idea). Timeout checks use :class:`Ticker` to avoid blaming others for
time this agent itself was frozen, starved or stopped (SIGSTOP, a long GC pause, a blocked
loop): a check that wakes up late knows by how much.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import AsyncIterator

_PHASE = random.random()
"""This process's offset of every beat, in seconds (taken modulo the period)."""


def next_beat(period: float, now: float | None = None) -> float:
    """The instant (on the running loop's clock, ``loop.time()``) of this process's next beat of
    ``period`` seconds that is at least ``period / 2`` away.

    A loop that sleeps to each beat in turn wakes exactly ``period`` apart; its first sleep
    is between half a period and one and a half. The half period also keeps a wake-up that
    asyncio runs a little early (it runs timers up to its clock resolution ahead) from
    choosing the beat it is already on."""
    if now is None:
        now = asyncio.get_running_loop().time()
    return first_beat_after(period, now + period / 2)


def nearest_beat(period: float, when: float) -> float:
    """The beat of ``period`` nearest to ``when``: a deadline moved by at most half a period
    onto the grid (a recurring deadline set one period after the last stays on it)."""
    return first_beat_after(period, when - period / 2)


def first_beat_after(period: float, now: float) -> float:
    """The first beat of ``period`` after ``now`` (within one period): the grid itself."""
    phase = _PHASE % period
    return phase + (math.floor((now - phase) / period) + 1) * period


async def sleep_to_beat(period: float) -> float:
    """Sleep until :func:`next_beat` of ``period``; return that beat's instant."""
    loop = asyncio.get_running_loop()
    beat = next_beat(period, loop.time())
    await asyncio.sleep(beat - loop.time())
    return beat


@contextlib.asynccontextmanager
async def timeout_on_beat(period: float) -> AsyncIterator[None]:
    """``asyncio.timeout`` of about ``period`` seconds that ends on a beat: for a wait on an
    event with a safety-net timeout, so that the safety net wakes with the other chores."""
    async with asyncio.timeout_at(next_beat(period)):
        yield


class Ticker:
    """``await ticker.tick()`` sleeps to the next beat of ``interval`` and returns the stall
    beyond it (0 when under ``stall_threshold``)."""

    def __init__(self, interval: float, stall_threshold: float = 0.05) -> None:
        self.interval = interval
        self.stall_threshold = stall_threshold
        self.stalled_seconds = 0.0
        """Total stall time observed (for status output)."""

    async def tick(self) -> float:
        """Sleep to the next beat; return the overshoot when it exceeds the threshold, else 0."""
        beat = await sleep_to_beat(self.interval)
        stall = asyncio.get_running_loop().time() - beat
        if stall <= self.stall_threshold:
            return 0.0
        self.stalled_seconds += stall
        return stall
