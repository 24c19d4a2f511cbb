"""Delayed, bundled SACKs (p2pkube/net/sctp.py) between two real aiortc peer connections on
loopback: fewer packets for request/answer traffic, bulk transfers intact, nothing left
running after a close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiortc import RTCDataChannel, RTCPeerConnection

from p2pkube.net import ice, sctp
from tests.test_sched_eviction import wait_for

pytestmark = pytest.mark.timeout(60)


@dataclass
class Side:
    pc: RTCPeerConnection
    channel: RTCDataChannel
    received: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))

    @property
    def association(self) -> sctp.DelayedSackTransport:
        assert isinstance(self.pc.sctp, sctp.DelayedSackTransport)
        return self.pc.sctp

    def packets_sent(self) -> int:
        """UDP packets this side's DTLS transport sent (aiortc's transport stats)."""
        return int(self.association.transport._RTCDtlsTransport__tx_packets)  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def loopback_candidates() -> object:
    ice.use_host_addresses(["127.0.0.1"])
    sctp.install()
    yield
    ice.use_host_addresses([])


async def connected_pair(sack_delay: float) -> tuple[Side, Side]:
    sides = []
    for _ in range(2):
        pc = RTCPeerConnection()
        channel = pc.createDataChannel("test", negotiated=True, id=0, ordered=True)
        side = Side(pc, channel)
        side.association.sack_delay = sack_delay
        channel.on("message", side.received.put_nowait)
        sides.append(side)
    a, b = sides
    opened = [asyncio.Event(), asyncio.Event()]
    a.channel.on("open", opened[0].set)
    b.channel.on("open", opened[1].set)
    await a.pc.setLocalDescription(await a.pc.createOffer())
    await b.pc.setRemoteDescription(a.pc.localDescription)
    await b.pc.setLocalDescription(await b.pc.createAnswer())
    await a.pc.setRemoteDescription(b.pc.localDescription)
    async with asyncio.timeout(15):
        await asyncio.gather(*(event.wait() for event in opened))
    await asyncio.sleep(0.5)  # the association's own start-up packets settle
    return a, b


@pytest.fixture
async def pairs() -> AsyncIterator[list[tuple[Side, Side]]]:
    made: list[tuple[Side, Side]] = []
    yield made
    for a, b in made:
        await a.pc.close()
        await b.pc.close()


async def ping_pong(a: Side, b: Side, rounds: int) -> int:
    """``rounds`` request/answer exchanges, a few ms apart; the packets both sides sent."""
    before = a.packets_sent() + b.packets_sent()
    for n in range(rounds):
        a.channel.send(b"ping %d" % n)
        async with asyncio.timeout(5):
            assert await b.received.get() == b"ping %d" % n
        b.channel.send(b"ack %d" % n)
        async with asyncio.timeout(5):
            assert await a.received.get() == b"ack %d" % n
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.5)  # the last delayed SACK goes out
    return a.packets_sent() + b.packets_sent() - before


async def test_a_request_and_its_answer_share_their_sacks(
    pairs: list[tuple[Side, Side]],
) -> None:
    delayed = await connected_pair(sctp.DEFAULT_SACK_DELAY)
    immediate = await connected_pair(0.0)
    pairs.extend([delayed, immediate])
    rounds = 40
    with_delay = await ping_pong(*delayed, rounds)
    without = await ping_pong(*immediate, rounds)
    # aiortc alone: ping, its SACK, ack, its SACK = 4 packets a round.
    assert without >= 4 * rounds
    # Delayed: the ping's SACK rides on the ack, the ack's on the next ping: ~2 a round.
    assert with_delay <= 2.5 * rounds, (with_delay, without)
    a, b = delayed
    assert b.association.sacks_bundled >= rounds - 2
    assert a.association.sacks_bundled >= rounds - 2


async def test_a_lone_message_is_acknowledged_within_the_delay(
    pairs: list[tuple[Side, Side]],
) -> None:
    a, b = await connected_pair(sctp.DEFAULT_SACK_DELAY)
    pairs.append((a, b))
    a.channel.send(b"one way")
    async with asyncio.timeout(5):
        assert await b.received.get() == b"one way"
    # b has nothing to say: its SACK goes alone once the delay is over, and a's sent
    # queue empties (no retransmission, which would take aiortc's 1 s minimum RTO).
    await wait_for(lambda: not a.association._sent_queue, sctp.DEFAULT_SACK_DELAY + 0.5, "the SACK")
    assert b.association.sacks_delayed == 1
    assert a.association._t3_handle is None


async def test_a_bulk_transfer_arrives_whole_and_in_order(
    pairs: list[tuple[Side, Side]],
) -> None:
    a, b = await connected_pair(sctp.DEFAULT_SACK_DELAY)
    pairs.append((a, b))
    messages = [bytes([n % 251]) * 16_384 for n in range(128)]  # 2 MiB
    for message in messages:
        a.channel.send(message)
    async with asyncio.timeout(30):
        for message in messages:
            assert await b.received.get() == message


async def test_closing_leaves_no_timer_or_task(pairs: list[tuple[Side, Side]]) -> None:
    a, b = await connected_pair(sctp.DEFAULT_SACK_DELAY)
    a.channel.send(b"owed a SACK")
    async with asyncio.timeout(5):
        await b.received.get()
    association = b.association
    assert association._sack_timer is not None  # the SACK is waiting
    await b.pc.close()
    await a.pc.close()
    assert association._sack_timer is None
    await asyncio.sleep(sctp.DEFAULT_SACK_DELAY + 0.1)
    assert association.sacks_delayed == 0


async def test_small_packets_within_the_delay_share_one_sack(
    pairs: list[tuple[Side, Side]],
) -> None:
    """Two probes that arrive within the delay are acknowledged together, and by bytes: a
    chunk's worth of small messages is acknowledged at once (a sender's window is never
    left waiting for the delay)."""
    a, b = await connected_pair(0.4)
    pairs.append((a, b))
    a.channel.send(b"probe 1")
    a.channel.send(b"probe 2")
    async with asyncio.timeout(5):
        assert await b.received.get() == b"probe 1"
        assert await b.received.get() == b"probe 2"
    await wait_for(lambda: not a.association._sent_queue, 1.5, "the SACK")
    assert (b.association.sacks_at_once, b.association.sacks_delayed) == (0, 1)
    for n in range(12):  # 12 x 120 bytes: past one chunk's worth (1,200 bytes)
        a.channel.send(bytes([n]) * 120)
    async with asyncio.timeout(5):
        for n in range(12):
            assert await b.received.get() == bytes([n]) * 120
    await wait_for(lambda: b.association.sacks_at_once >= 1, 0.3, "a SACK at once")
