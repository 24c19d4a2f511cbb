"""The output budget of one container instance: a token bucket on the bytes it writes.

Both runtimes stop an instance that writes faster than ``runtime.log_rate_bytes`` per second
for longer than a ``runtime.log_burst_bytes`` burst, with reason ``OutputFlood``: natively as
the agent reads the instance's output pipes (``pipes.py``), in the browser as the Worker's
output arrives.
"""

from __future__ import annotations

import time

from p2pkube.pacing import TokenBucket


class OutputBudget:
    """Bytes an instance may still write now; refilled at ``rate`` up to ``burst``."""

    def __init__(self, rate: int, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._bucket = TokenBucket(rate, burst)

    def spend(self, size: int) -> bool:
        """Take ``size`` bytes; False once the budget is overdrawn (the instance must stop)."""
        return self._bucket.spend(size, time.monotonic())

    def message(self) -> str:
        """The termination message of an instance stopped for overdrawing."""
        return (
            f"wrote output faster than {self.rate} bytes/s for longer than a "
            f"{self.burst}-byte burst"
        )
