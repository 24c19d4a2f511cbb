"""Which endpoint nodes a router stops waiting for: active probes of nodes that keep a request
waiting, and a short ejection of the nodes found dead (Envoy's outlier detection, simplified).

The failure detector needs about two seconds to declare a node killed with SIGKILL NotReady,
and its WebRTC link lingers as long. A router that only trusted them would keep sending new
requests to the dead node meanwhile, and each would wait for the loss: at 50 requests/s that is
a hundred requests slowed by seconds. So when a request to a node has waited
``services.ping_after`` without an answer, the router pings that node (one ``svc.ping`` per
node at a time, whatever the number of requests waiting on it). A ping that gets no answer
within ``services.ping_timeout`` ejects the node for ``services.ejection_period``: the router
picks other endpoints meanwhile, and the requests waiting on it may fail over at once when that
is safe (an idempotent method) and another endpoint is there to take them (the router decides).
A node that answers its ping is only slow, and requests to it keep waiting for their handler.

A ping's timer that fires late says more about this node than about the pinged one: this
node's event loop was stalled (a loaded machine, a tab in the background), and the answer may
already be waiting, unread, in a socket. So a timeout that fired more than half a
``services.ping_timeout`` late gives the ping another ``services.ping_timeout`` (a few times at
most) before it ejects anyone.

Shared Python (the tab's router uses it too): no platform library.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from p2pkube.services.settings import ServiceSettings

log = logging.getLogger(__name__)

LATE_TIMER_GRACES = 3
"""How many more ``services.ping_timeout`` a ping gets while its timer keeps firing late."""

Ping = Callable[[str], Awaitable[object]]
"""``await ping(node_id)`` returns once the node answered; raises when it did not in time."""


class NodeProbes:
    """Probes of the nodes requests wait on, and the nodes ejected after a failed one."""

    def __init__(
        self,
        ping: Ping,
        settings: ServiceSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ping = ping
        self._settings = settings
        self._clock = clock
        self._ejected: dict[str, float] = {}
        """Node id -> until when (clock) no request is sent to it."""
        self._probing: dict[str, asyncio.Task[None]] = {}
        self.probes = 0
        self.ejections = 0
        self.late_timers = 0
        """Ping timeouts that fired late (this node's loop stalled) and were given more time."""

    # -- what the router asks ------------------------------------------------------------------
    def ejected(self, node_id: str) -> bool:
        """True while ``node_id`` is ejected (a ping to it failed within the period)."""
        until = self._ejected.get(node_id)
        if until is None:
            return False
        if self._clock() >= until:
            del self._ejected[node_id]
            return False
        return True

    def alive(self, node_id: str, waited: float) -> bool:
        """Whether a request that has waited ``waited`` seconds on ``node_id`` should go on
        waiting: False once the node is ejected. Past ``services.ping_after`` it starts a
        probe of the node, unless one runs already."""
        if self.ejected(node_id):
            return False
        if waited >= self._settings.ping_after and node_id not in self._probing:
            task = asyncio.get_running_loop().create_task(self._probe(node_id))
            self._probing[node_id] = task
            task.add_done_callback(functools.partial(self._probe_ended, node_id))
        return True

    def _probe_ended(self, node_id: str, _task: asyncio.Task[None]) -> None:
        self._probing.pop(node_id, None)

    def eject(self, node_id: str, why: str) -> None:
        """Send no request to ``node_id`` for ``services.ejection_period`` seconds."""
        if not self.ejected(node_id):
            self.ejections += 1
            log.info(
                "node %s ejected from routing for %gs: %s",
                node_id,
                self._settings.ejection_period,
                why,
            )
        self._ejected[node_id] = self._clock() + self._settings.ejection_period

    # -- probing -------------------------------------------------------------------------------
    async def _probe(self, node_id: str) -> None:
        self.probes += 1
        timeout = self._settings.ping_timeout
        ping = asyncio.ensure_future(self._ping(node_id))
        try:
            for _ in range(1 + LATE_TIMER_GRACES):
                due = self._clock() + timeout
                try:
                    await asyncio.wait_for(asyncio.shield(ping), timeout)
                    return
                except TimeoutError:
                    late = self._clock() - due
                    if late <= timeout / 2:
                        break
                    self.late_timers += 1
                    log.info("ping to %s timed out %.2fs late: waiting once more", node_id, late)
            why = f"no answer to a ping within {timeout:g}s (TimeoutError)"
        except Exception as exc:  # any rpc failure: no answer is no answer
            why = f"no answer to a ping ({type(exc).__name__}: {exc})"
        finally:
            ping.cancel()
        self.eject(node_id, why)

    async def close(self) -> None:
        """Cancel the probes still running."""
        tasks = list(self._probing.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stats(self) -> dict[str, int]:
        return {
            "probes": self.probes,
            "ejections": self.ejections,
            "ejected": len(self._ejected),
            "lateTimers": self.late_timers,
        }
