"""Rates shared by every layer: how often a warning is logged, how fast bytes may flow.

A peer that sends thousands of bad messages must not fill the log (nor the disk), yet each
message is worth counting: a :class:`LogPacer` lets one report through per interval and folds
the ones in between into the next report's count. A :class:`TokenBucket` meters bytes: the
update bytes each link may deliver (state admission) and the output a pod may write
(``runtime/budget.py``); and messages: what one signaling socket may send, and the failed
joins of one address (``signaling/admission.py``). Dependency-free, so the browser node's
Python runs it too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class LogPacer:
    """One kind of event: reported at most once per ``interval`` seconds."""

    __slots__ = ("last", "unreported")

    def __init__(self) -> None:
        self.last = float("-inf")
        """When an event was last reported (monotonic seconds)."""
        self.unreported = 0
        """Events since then that were only counted."""

    def report(self, now: float, interval: float) -> int | None:
        """How many events the report made now stands for (this one included), or None when
        this event is only counted (one was reported less than ``interval`` ago)."""
        if now - self.last < interval:
            self.unreported += 1
            return None
        folded, self.unreported, self.last = self.unreported + 1, 0, now
        return folded


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens per second up to `burst`; starts full. Time is passed in (monotonic s)."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.updated = time.monotonic()

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, amount: float, now: float, *, borrow: bool = False) -> bool:
        """Take `amount` tokens if there are that many, or, with `borrow`, if the bucket is
        not in debt (it may then go below zero). False, and nothing taken, otherwise."""
        self._refill(now)
        if self.tokens >= amount or (borrow and self.tokens >= 0):
            self.tokens -= amount
            return True
        return False

    def has(self, amount: float, now: float) -> bool:
        """Whether `amount` tokens are there to take now (nothing is taken)."""
        self._refill(now)
        return self.tokens >= amount

    def spend(self, amount: float, now: float) -> bool:
        """Take `amount` tokens whatever is left; False once the bucket is overdrawn."""
        self._refill(now)
        self.tokens -= amount
        return self.tokens >= 0
