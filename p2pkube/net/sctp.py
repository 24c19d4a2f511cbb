"""aiortc's SCTP association with delayed, bundled SACKs (RFC 4960 section 6.2).

Why: aiortc acknowledges every packet that carries DATA with a SACK of its own, at once. Most
of a link's packets are small request/answer pairs (SWIM's ping and ack, a request rpc and its
answer), so half the packets on the wire were bare SACKs: each one a DTLS record encrypted and
decrypted in Python, a UDP send and a receive, an event-loop wake-up on both sides. An idle
agent spends most of its CPU on its probes' packets (docs/benchmarks.md, idle section).

RFC 4960 lets a receiver delay its SACK (it SHOULD within 200 ms, MUST within 500 ms, and
SHOULD for at least every second packet with DATA) and bundle it with the DATA it sends
anyway. This association does that:

* a packet with DATA is acknowledged at once when it leaves a gap or repeats a TSN (the
  sender's fast retransmit needs those reports), when it carries a full-size DATA chunk (a
  bulk transfer keeps aiortc's one SACK per packet, and with it the growth of the sender's
  congestion window), or when the data not yet acknowledged reaches a full chunk's worth;
* otherwise the SACK waits ``sack_delay`` seconds, and goes out in the same packet as the
  next DATA chunk this side sends before then (the answer to the request it acknowledges).

The RFC's "every second packet" is there to clock a bulk sender's window; small messages do
not fill it, so here it is counted in bytes instead: two probes that arrive within the delay
share one SACK, which rides on the next one this side sends. So a ping and its ack take two
or three packets instead of four. The delay is 200 ms until the link's handshake says the
neighbour runs aiortc too, then ``transport.sctp_sack_delay_native`` (aiortc retransmits
after 1 s at the earliest, so a later SACK is never taken for a loss).

A lone SACK that has to go is sent on the process's next beat (`p2pkube.ticker`, the links'
watchdog period) when one comes within the delay, so that its wake-up is one the agent pays
anyway.

The SACK built is aiortc's own (``_send_sack``); only when and with what it is sent
changes. The browser's SCTP stack (usrsctp in Chromium) delays its SACKs already; the two
interoperate as any two RFC 4960 stacks do.

aiortc builds its association inside ``RTCPeerConnection`` from the name ``RTCSctpTransport``
of its ``rtcpeerconnection`` module; :func:`install` points that name at this class once, so
every peer connection of this process gets it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from aiortc import rtcpeerconnection, rtcsctptransport
from aiortc.rtcsctptransport import (
    USERDATA_MAX_LENGTH,
    Chunk,
    DataChunk,
    RTCSctpTransport,
    SackChunk,
)

from p2pkube.ticker import first_beat_after

log = logging.getLogger(__name__)

DEFAULT_SACK_DELAY: Final = 0.2
"""RFC 4960's recommended maximum delay of a SACK (``TransportSettings.sctp_sack_delay``)."""


class DelayedSackTransport(RTCSctpTransport):
    """An SCTP association that delays a lone SACK and bundles it with outgoing DATA."""

    sack_delay: float = DEFAULT_SACK_DELAY
    """Seconds a SACK may wait for DATA to ride on; 0 acknowledges every packet at once."""
    beat: float = 0.0
    """The period of this process's beat (`p2pkube.ticker`) a lone SACK is sent on when one
    comes within ``sack_delay``, to share that wake-up with the other chores (0: never)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unacked_bytes = 0
        """User data received since the last SACK went out."""
        self._packet_largest = 0
        """While a packet is handled: the size of its largest DATA chunk (0: none yet)."""
        self._sack_timer: asyncio.TimerHandle | None = None
        self._sack_task: asyncio.Task[None] | None = None
        self._carried: Chunk | None = None
        """A DATA chunk to send in the same packet as the SACK being built."""
        self.sacks_bundled = 0
        """SACKs that went out with DATA instead of in a packet of their own."""
        self.sacks_delayed = 0
        """SACKs sent alone after waiting ``sack_delay``, or less, to the next beat."""
        self.sacks_at_once = 0
        """SACKs sent at once (a gap, a duplicate, a full-size chunk, a chunk's worth of
        data unacknowledged)."""

    # -- receiving ---------------------------------------------------------------------------------
    async def _handle_data(self, data: bytes) -> None:
        self._packet_largest = 0
        try:
            await super()._handle_data(data)
        finally:
            self._packet_largest = 0

    async def _receive_data_chunk(self, chunk: DataChunk) -> None:
        size = len(chunk.user_data)
        self._packet_largest = max(self._packet_largest, size)
        self._unacked_bytes += size
        await super()._receive_data_chunk(chunk)

    async def _send_sack(self) -> None:
        """Called by aiortc after each packet that left a SACK owed: send it now or soon."""
        largest = self._packet_largest
        self._packet_largest = 0
        if (
            self.sack_delay <= 0
            or self._unacked_bytes >= USERDATA_MAX_LENGTH
            or largest >= USERDATA_MAX_LENGTH
            or self._sack_misordered
            or self._sack_duplicates
            or self._association_state != self.State.ESTABLISHED
        ):
            self.sacks_at_once += 1
            await self._sack_now()
        elif self._sack_timer is None:
            loop = asyncio.get_running_loop()
            now = loop.time()
            due = now + self.sack_delay
            if self.beat > 0:
                due = min(due, first_beat_after(self.beat, now))
            self._sack_timer = loop.call_at(due, self._sack_timer_fired)

    def _sack_timer_fired(self) -> None:
        self._sack_timer = None
        if self._sack_needed and (self._sack_task is None or self._sack_task.done()):
            self._sack_task = asyncio.ensure_future(self._delayed_sack())

    async def _delayed_sack(self) -> None:
        if not self._sack_needed or self._association_state != self.State.ESTABLISHED:
            return
        self.sacks_delayed += 1
        try:
            await self._sack_now()
        except ConnectionError:  # the DTLS transport closed meanwhile: nothing to acknowledge
            log.debug("delayed SACK not sent: the transport is closed")

    async def _sack_now(self, carried: Chunk | None = None) -> None:
        """aiortc's SACK, sent now (with ``carried`` in the same packet when given)."""
        if self._sack_timer is not None:
            self._sack_timer.cancel()
            self._sack_timer = None
        self._unacked_bytes = 0
        self._carried = carried
        try:
            await super()._send_sack()
        finally:
            self._carried = None

    # -- sending -----------------------------------------------------------------------------------
    async def _send_chunk(self, chunk: Chunk) -> None:
        if isinstance(chunk, SackChunk) and self._carried is not None:
            carried, self._carried = self._carried, None
            await self._send_packet(bytes(chunk) + bytes(carried))
            return
        if isinstance(chunk, DataChunk) and self._sack_needed and self._sack_timer is not None:
            self.sacks_bundled += 1
            await self._sack_now(carried=chunk)
            return
        await super()._send_chunk(chunk)

    async def _send_packet(self, chunks: bytes) -> None:
        """One SCTP packet of already serialized, padded ``chunks`` (a SACK first, then
        DATA, as RFC 4960 section 6.5 bundles them)."""
        checksum = rtcsctptransport.crc32c(self._common_header(checksum=0) + chunks)
        await self.transport._send_data(self._common_header(checksum) + chunks)

    def _common_header(self, checksum: int) -> bytes:
        assert self._remote_port is not None  # known once the association is established
        return (
            self._local_port.to_bytes(2, "big")
            + self._remote_port.to_bytes(2, "big")
            + self._remote_verification_tag.to_bytes(4, "big")
            + checksum.to_bytes(4, "little")
        )

    # -- closing -----------------------------------------------------------------------------------
    def _set_state(self, state: RTCSctpTransport.State) -> None:
        super()._set_state(state)
        if state == self.State.CLOSED:
            if self._sack_timer is not None:
                self._sack_timer.cancel()
                self._sack_timer = None
            if self._sack_task is not None and not self._sack_task.done():
                self._sack_task.cancel()


def install() -> None:
    """Make every aiortc peer connection of this process use :class:`DelayedSackTransport`
    (idempotent)."""
    rtcpeerconnection.RTCSctpTransport = DelayedSackTransport  # type: ignore[misc]
