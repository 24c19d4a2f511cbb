"""Pacing of repeated warnings, shared by every layer that logs what peers send.

A peer that sends thousands of bad messages must not fill the log (nor the disk), yet each
message is worth counting: a :class:`LogPacer` lets one report through per interval and folds
the ones in between into the next report's count. Dependency-free, so the browser node's
Python runs it too.
"""

from __future__ import annotations


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
