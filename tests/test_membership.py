"""The failure detector's rules on one agent, fed heartbeats by hand (no network)."""

from __future__ import annotations

import asyncio
from typing import Any

from p2pkube.membership.detector import Membership, MembershipSettings
from p2pkube.net.frames import FrameType

FAST = MembershipSettings(heartbeat_interval=0.05, node_timeout=0.3, check_interval=0.02)


class Recorder:
    """A transport that only records what the detector broadcasts."""

    node_id = "a" * 32

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def neighbours(self) -> list[str]:
        return ["b" * 32]

    def broadcast(self, frame_type: FrameType, body: Any, exclude: Any = ()) -> int:
        self.sent.append(body)
        return 1

    def send(self, node: str, frame_type: FrameType, body: Any) -> bool:
        return True


def heartbeat(seq: int, **extra: Any) -> dict[str, Any]:
    body = {"node": "b" * 32, "name": "tab", "inc": 1, "seq": seq, "ttl": 1, "peers": []}
    return {**body, **extra}


async def ready_after(membership: Membership, body: dict[str, Any], wait: float) -> bool:
    membership.handle_heartbeat("b" * 32, body)
    await asyncio.sleep(wait)
    liveness = membership.get("b" * 32)
    assert liveness is not None
    return liveness.ready


async def test_a_node_asking_for_grace_stays_ready_that_much_longer() -> None:
    membership = Membership("a" * 32, "native", Recorder(), FAST)  # type: ignore[arg-type]
    await membership.start()
    try:
        assert not await ready_after(membership, heartbeat(1), 0.6)  # 0.3 s timeout
        assert await ready_after(membership, heartbeat(2, grace=1.0), 0.6)  # 1.3 s now
        await asyncio.sleep(1.0)
        assert not membership.get("b" * 32).ready  # type: ignore[union-attr]
        assert membership.get("b" * 32).reason == "HeartbeatTimeout"  # type: ignore[union-attr]
    finally:
        await membership.close(leaving=False)


async def test_grace_is_capped_and_garbage_is_ignored() -> None:
    settings = MembershipSettings(
        heartbeat_interval=0.05, node_timeout=0.3, check_interval=0.02, max_grace=0.2
    )
    membership = Membership("a" * 32, "native", Recorder(), settings)  # type: ignore[arg-type]
    await membership.start()
    try:
        assert not await ready_after(membership, heartbeat(1, grace=1e9), 0.8)  # capped: 0.5 s
        for seq, garbage in enumerate(["10", True, float("nan"), -5, None], start=2):
            membership.handle_heartbeat("b" * 32, heartbeat(seq, grace=garbage))
            assert membership.get("b" * 32).grace == 0.0  # type: ignore[union-attr]
    finally:
        await membership.close(leaving=False)


async def test_own_grace_travels_in_every_heartbeat() -> None:
    transport = Recorder()
    membership = Membership("a" * 32, "tab", transport, FAST)  # type: ignore[arg-type]
    await membership.start()
    try:
        await asyncio.sleep(0.12)
        assert all("grace" not in body for body in transport.sent)
        membership.grace = 10.0
        await asyncio.sleep(0.12)
        assert transport.sent[-1]["grace"] == 10.0
    finally:
        await membership.close(leaving=False)
