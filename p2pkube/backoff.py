"""Exponential back-off: one stateful helper for every "wait longer each time it fails again".

Kubelet restarts and module pulls, the mesh's redials of one node and the signaling client's
reconnects all wait a delay that starts at ``initial``, grows by ``factor`` at each further
failure up to ``maximum``, and restarts from ``initial`` once things went well. They differ only
in their jitter: a restart waits exactly its delay (a user reads it in CrashLoopBackOff), while
many agents cut off together must not all come back at the same instant, so the mesh and the
signaling client spread each wait over a range of the delay.

The state is one number per retried thing (per container, per peer, per connection), so a
small class fits better than a retry decorator such as tenacity: the callers do not retry a
function call, they keep a delay across callbacks and events (a link closing, a session
ending) and sometimes only read it (a pod resumed after an agent restart waits the first
delay without advancing it).

Dependency-free on purpose: both the native agent and the browser node (Pyodide) import it.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """A delay that grows by ``factor`` from ``initial`` to ``maximum`` at each :meth:`next`.

    The first wait is ``initial`` as given (callers clamp it if they must); every later delay
    is at most ``maximum``.

    ``spread`` is the range ``(low, high)`` each wait is multiplied by, uniformly at random
    (``low + (high - low) * rand()``, like :func:`random.uniform`):
    ``(1, 1)`` (the default) waits exactly the delay, ``(0.8, 1.2)`` within ±20 % of it,
    ``(0.5, 1)`` between half and all of it. ``rand`` returns a float in [0, 1); tests inject
    a deterministic one.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        factor: float = 2.0,
        spread: tuple[float, float] = (1.0, 1.0),
        rand: Callable[[], float] = random.random,
    ) -> None:
        if initial < 0 or maximum < 0 or factor < 1:
            raise ValueError("back-off needs initial >= 0, maximum >= 0 and factor >= 1")
        low, high = spread
        if low < 0 or high < 0:
            raise ValueError("back-off spread must not be negative")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.spread = spread
        self._rand = rand
        self._delay = initial

    @property
    def current(self) -> float:
        """The delay (before jitter) the next :meth:`next` uses, without advancing it."""
        return self._delay

    def next(self, *, jitter: bool = True) -> float:
        """The wait for this failure (the current delay, jittered); grows the delay after it.

        ``jitter=False`` waits the bare delay once, e.g. a pause that must be exact but should
        still make the following failure wait longer.
        """
        delay = self._delay
        self._delay = min(delay * self.factor, self.maximum)
        low, high = self.spread
        if not jitter or low == high == 1.0:
            return delay
        return delay * (low + (high - low) * self._rand())

    def reset(self) -> None:
        """Things went well: the next failure waits ``initial`` again."""
        self._delay = self.initial
