"""The native carrier of a link: an aiortc RTCPeerConnection with one data channel.

The channel is negotiated out of band (``negotiated=True, id=0``), ordered and reliable, so both
sides create it at once and no in-band DCEP round trip is needed. The protocol on top (frames,
handshake, watchdog, closing) is :class:`~p2pkube.net.linkbase.LinkBase`'s; this module only
adapts aiortc to it.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from p2pkube.net import ice, sctp
from p2pkube.net.linkbase import LinkBase, LinkFactory, LinkState
from p2pkube.net.settings import TransportSettings

__all__ = ["LinkState", "PeerLink", "peer_link_factory"]


class PeerLink(LinkBase):
    """A link to one neighbour over aiortc."""

    def __init__(self, *, ice_servers: list[RTCIceServer] | None = None, **link: Any) -> None:
        """``link``: :class:`LinkBase`'s arguments. ``ice_servers``: the STUN/TURN servers (the
        mesh builds them once, at start, with :func:`p2pkube.net.ice.ice_servers`); None builds
        them from the settings."""
        super().__init__(**link)
        settings: TransportSettings = link["settings"]
        if ice_servers is None:
            ice_servers = ice.ice_servers(settings)
        sctp.install()
        self._pc = RTCPeerConnection(configuration=RTCConfiguration(iceServers=ice_servers))
        self._channel = self._pc.createDataChannel("p2pkube", negotiated=True, id=0, ordered=True)
        if isinstance(self._pc.sctp, sctp.DelayedSackTransport):
            self._pc.sctp.sack_delay = settings.sctp_sack_delay
            self._pc.sctp.beat = self.watchdog_interval
        self._urgent_queued: list[bytes] = []
        """Urgent messages moved to the front of aiortc's queue, maybe still waiting there."""
        if settings.sctp_receive_window and self._pc.sctp is not None:
            # aiortc advertises 1 MiB; a burst that large overflows the kernel's default UDP
            # receive buffer and costs a 1 s retransmission stall (measured in bench/).
            self._pc.sctp._advertised_rwnd = settings.sctp_receive_window
        self._channel.on("open", self._on_open)
        self._channel.on("message", self._on_message)
        self._channel.on("close", lambda: self.close_soon("data channel closed"))
        self._channel.on("bufferedamountlow", self._on_buffered_low)
        self._pc.on("connectionstatechange", self._on_connection_state)

    async def _negotiate_offer(self) -> str:
        await self._pc.setLocalDescription(await self._pc.createOffer())
        return self._pc.localDescription.sdp

    async def _negotiate_answer(self, offer_sdp: str) -> str:
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        return self._pc.localDescription.sdp

    async def _apply_answer(self, answer_sdp: str) -> None:
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    def _channel_open(self) -> bool:
        return self._channel.readyState == "open"

    def _channel_send(self, message: bytes) -> None:
        self._channel.send(message)

    def _channel_send_urgent(self, message: bytes) -> None:
        """Put the message ahead of the bulk messages aiortc still queues for the
        association, behind only the urgent ones queued before it (in order).

        aiortc keeps one queue of whole messages per association and hands the next one to
        SCTP only once the previous one's chunks are all sent, so an urgent message queued
        normally waits behind up to ``send_window`` bytes of state: seconds, when the
        receiving end is busy too, and long enough for a leader's probe answers to miss their
        deadline on a loaded machine (measured: a 1,000-pod Job's leader declared dead while
        its loop was never late). Moved forward it waits behind one message at most. The
        channel is ordered and a message's stream sequence number is assigned when SCTP
        takes it, so the receiver simply gets it earlier; the reassembler takes urgent frames
        between a bulk frame's fragments. Without that queue (another aiortc), it is sent
        normally."""
        self._channel.send(message)
        queue = getattr(self._channel.transport, "_data_channel_queue", None)
        if queue is None or not queue or queue[-1][2] is not message:
            return
        position = 0
        while position < len(queue) - 1 and any(
            queue[position][2] is waiting for waiting in self._urgent_queued
        ):
            position += 1
        if position < len(queue) - 1:
            queue.insert(position, queue.pop())
        self._urgent_queued = [queue[i][2] for i in range(position + 1)]

    def _channel_buffered(self) -> int:
        return int(self._channel.bufferedAmount)

    def _set_low_threshold(self, limit: int) -> None:
        self._channel.bufferedAmountLowThreshold = limit

    async def _close_connection(self) -> None:
        await self._pc.close()

    def _carrier_knows_peer(self, kind: str) -> None:
        """A native neighbour runs aiortc, whose retransmission timer never fires under
        1 s: our SACKs to it may wait the longer ``sctp_sack_delay_native`` for DATA to
        ride on. A browser's SCTP stack may retransmit sooner, so its SACKs keep the RFC's
        200 ms."""
        association = self._pc.sctp
        if kind == "native" and isinstance(association, sctp.DelayedSackTransport):
            association.sack_delay = self._settings.sctp_sack_delay_native

    def _on_connection_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self.close_soon(f"connection {self._pc.connectionState}")

    def carrier_counters(self) -> dict[str, int]:
        """How this link's SACKs went (net/sctp.py): riding on DATA, alone after the delay,
        alone at once."""
        association = self._pc.sctp
        if not isinstance(association, sctp.DelayedSackTransport):
            return {}
        return {
            "sacksBundled": association.sacks_bundled,
            "sacksDelayed": association.sacks_delayed,
            "sacksAtOnce": association.sacks_at_once,
        }

    def selected_pair(self) -> dict[str, str] | None:
        """Each end's candidate type (``host``, ``srflx``, ``relay``: through a TURN server)
        and address, once ICE nominated a pair. None before that, or if aiortc/aioice
        internals changed (read without a public API)."""
        try:
            connection = self._pc.sctp.transport.transport._connection  # type: ignore[union-attr]  # None before negotiation: the except below
            pair = connection._nominated.get(1)
            if pair is None:
                return None
            local, remote = pair.local_candidate, pair.remote_candidate
            return {
                "local": str(local.type),
                "remote": str(remote.type),
                "localAddress": f"{local.host}:{local.port}",
                "remoteAddress": f"{remote.host}:{remote.port}",
            }
        except Exception:
            return None


def peer_link_factory(settings: TransportSettings) -> LinkFactory:
    """The native agent's link factory: aiortc links sharing one ICE server list, built now
    (a malformed STUN/TURN setting is a ValueError at start, not at each link)."""
    servers = ice.ice_servers(settings)

    def new_link(**link: Any) -> LinkBase:
        return PeerLink(ice_servers=servers, **link)

    return new_link
