"""Liveness before bulk on a real aiortc link: a probe sent after a burst of state arrives
long before the burst does (``transport.send_window``, urgent frames in linkbase.py)."""

from __future__ import annotations

import asyncio
import secrets
import time

from p2pkube.net import ice
from p2pkube.net.frames import FRAGMENT_BYTES, Frame, FrameType
from p2pkube.net.handshake import Handshake
from p2pkube.net.identity import NodeIdentity, verify_signature
from p2pkube.net.link import LinkState, PeerLink
from p2pkube.net.settings import TransportSettings

TOKEN = "p2pkube-test-token"


def _link(
    identity: NodeIdentity,
    name: str,
    peer: str | None,
    frames: list[tuple[float, Frame, int]],
    up: asyncio.Event,
    got_sync: asyncio.Event | None = None,
) -> PeerLink:
    def on_frame(link: object, frame: Frame) -> None:
        frames.append((time.monotonic(), frame, getattr(link, "bytes_received", 0)))
        if got_sync is not None and frame.type is FrameType.SYNC:
            got_sync.set()

    return PeerLink(
        expected_node=peer,
        session="s1",
        initiator=peer is not None,
        handshake=Handshake(
            identity, name, "native", "c1", TOKEN, check_signature=verify_signature
        ),
        settings=TransportSettings(),
        on_established=lambda link: up.set(),
        on_frame=on_frame,
        on_closed=lambda link: None,
    )


async def test_a_probe_overtakes_a_burst_of_state_and_both_arrive_whole() -> None:
    ice.use_host_addresses(["127.0.0.1"])
    a_id, b_id = NodeIdentity.generate(), NodeIdentity.generate()
    a_frames: list[tuple[float, Frame, int]] = []
    b_frames: list[tuple[float, Frame, int]] = []
    a_up, b_up = asyncio.Event(), asyncio.Event()
    a = _link(a_id, "a", b_id.node_id, a_frames, a_up)
    got_sync = asyncio.Event()
    b = _link(b_id, "b", None, b_frames, b_up, got_sync)
    try:
        async with asyncio.timeout(15):
            answer = await b.accept_offer(await a.create_offer())
            await a.accept_answer(answer)
            await a_up.wait()
            await b_up.wait()
        assert a.state is b.state is LinkState.ESTABLISHED
        burst = secrets.token_bytes(4 * 1024 * 1024)  # a 4 MB state transaction
        quiet = b.bytes_received
        assert a.send(FrameType.SYNC, burst)
        assert a.buffered_amount > 3 * 1024 * 1024  # most of it waits in the link's queue
        sent = time.monotonic()
        for i in range(3):  # urgent frames overtake the burst, not each other
            assert a.send(FrameType.SWIM, [1, f"probe-{i}-after-the-burst"])
        async with asyncio.timeout(30):
            await got_sync.wait()
        arrivals = {f.type: at for at, f, _ in b_frames}
        order = [f.type for _, f, _ in b_frames]
        probes = [f.body[1] for _, f, _ in b_frames if f.type is FrameType.SWIM]
        assert probes == [f"probe-{i}-after-the-burst" for i in range(3)], probes
        assert order.index(FrameType.SWIM) < order.index(FrameType.SYNC), order
        # It overtook everything queued but the one message the transport was sending.
        before = next(count for _, f, count in b_frames if f.type is FrameType.SWIM)
        assert before - quiet <= 2 * FRAGMENT_BYTES, before - quiet
        probe_delay, burst_delay = arrivals[FrameType.SWIM] - sent, arrivals[FrameType.SYNC] - sent
        assert probe_delay < burst_delay / 4, (probe_delay, burst_delay)
        whole = next(f for _, f, _ in b_frames if f.type is FrameType.SYNC)
        assert whole.body == burst
        async with asyncio.timeout(10):
            assert await a.wait_buffered(0)  # everything queued was handed over
    finally:
        await a.close("test over", notify=False)
        await b.close("test over", notify=False)
