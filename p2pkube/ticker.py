"""A periodic sleep that also reports how long this process could not run (Lifeguard's idea).

Timeout checks use it to avoid blaming others for time this agent itself was frozen, starved or
stopped (SIGSTOP, a long GC pause, a blocked loop): a check that wakes up late knows by how much.
"""

from __future__ import annotations

import asyncio
import time


class Ticker:
    """``await ticker.tick()`` sleeps ``interval`` seconds and returns the stall beyond it."""

    def __init__(self, interval: float, stall_threshold: float = 0.05) -> None:
        self.interval = interval
        self.stall_threshold = stall_threshold
        self.stalled_seconds = 0.0
        """Total stall time observed (for status output)."""

    async def tick(self) -> float:
        """Sleep one interval; return the overshoot when it exceeds the threshold, else 0."""
        expected = time.monotonic() + self.interval
        await asyncio.sleep(self.interval)
        stall = time.monotonic() - expected
        if stall <= self.stall_threshold:
            return 0.0
        self.stalled_seconds += stall
        return stall
