"""Helpers shared by the state tests: an in-process network of ClusterStates."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from p2pkube.state import ClusterState, StateSettings, SyncProtocolError
from p2pkube.state.sync import decode_state_vector

QUIET = StateSettings(anti_entropy_interval=3600.0)
"""Settings with anti-entropy effectively off, so tests see only the protocol they drive."""


class Mesh:
    """Connects ClusterStates with bounded asyncio queues, one pump task per direction.

    The queue decouples `send` from the receiver's `receive`, as a real transport does.
    """

    def __init__(self) -> None:
        self.queues: list[asyncio.Queue[bytes]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.errors: list[tuple[str, Exception]] = []

    def link(
        self,
        a: ClusterState,
        a_id: str,
        b: ClusterState,
        b_id: str,
        drop: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Attach a and b to each other; `drop(frame)` may discard frames (lossy link)."""
        self._direction(a, a_id, b, b_id, drop)
        self._direction(b, b_id, a, a_id, drop)

    def _direction(
        self,
        src: ClusterState,
        src_id: str,
        dst: ClusterState,
        dst_id: str,
        drop: Callable[[bytes], bool] | None,
    ) -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=100_000)
        self.queues.append(queue)

        def send(frame: bytes) -> None:
            if drop is None or not drop(frame):
                queue.put_nowait(frame)

        async def pump() -> None:
            while True:
                frame = await queue.get()
                try:
                    dst.receive(src_id, frame)
                except SyncProtocolError as exc:
                    self.errors.append((src_id, exc))
                finally:
                    queue.task_done()

        self.tasks.append(asyncio.create_task(pump()))
        src.attach_peer(dst_id, send)

    async def settle(self, within: float = 10.0) -> None:
        """Wait until every queue is drained (and stays drained)."""

        async def drained() -> None:
            while True:
                await asyncio.gather(*(q.join() for q in self.queues))
                await asyncio.sleep(0)
                if all(q.empty() for q in self.queues):
                    return

        await asyncio.wait_for(drained(), within)

    async def close(self) -> None:
        """Stop the pumps."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()


def contents(state: ClusterState) -> dict[str, dict[str, object]]:
    """All maps of a state as plain dicts, for equality checks."""
    return {m: dict(state.items(m)) for m in ("objects", "status", "leases", "events")}


def sv(state: ClusterState) -> dict[int, int]:
    """Decoded state vector (the encoding's client order is not canonical)."""
    return decode_state_vector(state.state_vector())
