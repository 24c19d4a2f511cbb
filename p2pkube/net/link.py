"""One direct link to a neighbour: an aiortc RTCPeerConnection with one data channel.

The channel is negotiated out of band (``negotiated=True, id=0``), ordered and reliable, so both
sides create it at once and no in-band DCEP round trip is needed. A link is usable only after the
handshake (``handshake.py``) proved the neighbour's node id and cluster membership; before that it
accepts nothing but HELLO, AUTH and BYE. Any protocol violation closes the link with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from p2pkube.net import ice
from p2pkube.net.frames import Frame, FrameError, FrameType, Reassembler, encode_frame, fragment
from p2pkube.net.handshake import Handshake, Hello, sdp_fingerprint
from p2pkube.net.settings import TransportSettings
from p2pkube.ticker import Ticker

log = logging.getLogger(__name__)


class LinkState(Enum):
    CONNECTING = "connecting"
    ESTABLISHED = "established"
    CLOSED = "closed"


class PeerLink:
    """A link to one neighbour, from offer/answer through handshake to close."""

    def __init__(
        self,
        *,
        expected_node: str | None,
        session: str,
        initiator: bool,
        handshake: Handshake,
        settings: TransportSettings,
        on_established: Callable[[PeerLink], None],
        on_frame: Callable[[PeerLink, Frame], None],
        on_closed: Callable[[PeerLink], None],
        ice_servers: list[RTCIceServer] | None = None,
    ) -> None:
        """``ice_servers``: the STUN/TURN servers (the mesh builds them once, at start, with
        :func:`p2pkube.net.ice.ice_servers`); None builds them from ``settings``."""
        self.expected_node = expected_node
        self.session = session
        self.initiator = initiator
        self.state = LinkState.CONNECTING
        self.close_reason = ""
        self.violation = False
        """True when the link was closed because the neighbour broke the protocol."""
        self.created = time.monotonic()
        self.last_received = self.created
        self.last_sent = self.created
        self.bytes_sent = 0
        self.bytes_received = 0
        self._handshake = handshake
        self._settings = settings
        self._on_established = on_established
        self._on_frame = on_frame
        self._on_closed = on_closed
        self._reassembler = Reassembler(settings.max_frame_bytes)
        self._sent_auth = False
        self._watchdog: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        """Set when the channel's queue fell to its low threshold (see :meth:`wait_buffered`)."""
        if ice_servers is None:
            ice_servers = ice.ice_servers(settings)
        config = RTCConfiguration(iceServers=ice_servers)
        self._pc = RTCPeerConnection(configuration=config)
        self._channel = self._pc.createDataChannel("p2pkube", negotiated=True, id=0, ordered=True)
        if settings.sctp_receive_window and self._pc.sctp is not None:
            # aiortc advertises 1 MiB; a burst that large overflows the kernel's default UDP
            # receive buffer and costs a 1 s retransmission stall (measured in bench/).
            self._pc.sctp._advertised_rwnd = settings.sctp_receive_window
        self._channel.on("open", self._on_open)
        self._channel.on("message", self._on_message)
        self._channel.on("close", lambda: self.close_soon("data channel closed"))
        self._channel.on("bufferedamountlow", self._drained.set)
        self._pc.on("connectionstatechange", self._on_connection_state)

    # -- identity ------------------------------------------------------------------------------
    @property
    def remote(self) -> Hello | None:
        """The neighbour's verified HELLO once established (None before)."""
        return self._handshake.remote if self.state is LinkState.ESTABLISHED else None

    @property
    def remote_id(self) -> str | None:
        return self.remote.node if self.remote else self.expected_node

    def __repr__(self) -> str:
        return f"<PeerLink {self.remote_id} {self.state.value} session={self.session}>"

    # -- offer / answer ------------------------------------------------------------------------
    def _start_watchdog(self) -> None:
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def create_offer(self) -> str:
        """Gather candidates and return the offer SDP (aiortc does not trickle)."""
        self._start_watchdog()
        await self._pc.setLocalDescription(await self._pc.createOffer())
        return self._pc.localDescription.sdp

    async def accept_offer(self, sdp: str) -> str:
        """Apply a remote offer and return our answer SDP."""
        self._start_watchdog()
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        return self._pc.localDescription.sdp

    async def accept_answer(self, sdp: str) -> None:
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def selected_pair(self) -> dict[str, str] | None:
        """The ICE candidate pair the link runs over, once ICE nominated one: each end's
        candidate type (``host``, ``srflx``, ``relay``: through a TURN server) and address.
        None before that, or if aiortc/aioice internals changed (read without a public API)."""
        try:
            connection = self._pc.sctp.transport.transport._connection  # type: ignore[union-attr]
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

    # -- sending -------------------------------------------------------------------------------
    def send(self, frame_type: FrameType, body: Any) -> bool:
        """Queue a frame; False when the link is not established. Never blocks."""
        if self.state is not LinkState.ESTABLISHED:
            return False
        return self._send(frame_type, body)

    def _send(self, frame_type: FrameType, body: Any) -> bool:
        if self._channel.readyState != "open":
            return False
        data = encode_frame(frame_type, body)
        try:
            for message in fragment(data):
                self._channel.send(message)
        except Exception as exc:  # aiortc raises InvalidStateError etc. on a dying transport
            self.close_soon(f"send failed: {exc}")
            return False
        self.bytes_sent += len(data)
        self.last_sent = time.monotonic()
        if self._channel.bufferedAmount > self._settings.send_buffer_limit:
            self.close_soon("send buffer overflow (neighbour too slow)")
        return True

    @property
    def buffered_amount(self) -> int:
        """Bytes queued on the data channel that SCTP has not taken yet."""
        return int(self._channel.bufferedAmount)

    async def wait_buffered(self, limit: int) -> bool:
        """Wait until at most ``limit`` bytes are queued; False when the link closes first.
        The caller bounds the wait (``asyncio.timeout``)."""
        await self._drain_to(limit, closing=False)
        return self.state is not LinkState.CLOSED and self._channel.bufferedAmount <= limit

    async def _drain_to(self, limit: int, *, closing: bool) -> None:
        """Event driven: aiortc fires ``bufferedamountlow`` when the queue falls to the
        channel's threshold, which each waiter sets to its own limit before waiting. With
        waiters of different limits the last one set wins; the others wake later or earlier
        and re-check their own condition, so none returns too early. Unless ``closing``, a
        close ends the wait (close() sets the event)."""
        while (
            self._channel.bufferedAmount > limit
            and self._channel.readyState == "open"
            and (closing or self.state is not LinkState.CLOSED)
        ):
            self._drained.clear()
            self._channel.bufferedAmountLowThreshold = max(0, limit)
            await self._drained.wait()

    # -- receiving -----------------------------------------------------------------------------
    def _fingerprints(self) -> tuple[str, str]:
        local = self._pc.localDescription
        remote = self._pc.remoteDescription
        return (
            sdp_fingerprint(local.sdp if local else ""),
            sdp_fingerprint(remote.sdp if remote else ""),
        )

    def _on_open(self) -> None:
        self._send(FrameType.HELLO, self._handshake.local.to_body())

    def _on_message(self, message: bytes | str) -> None:
        if self.state is LinkState.CLOSED:
            return
        self.last_received = time.monotonic()
        self.bytes_received += len(message)
        try:
            frame = self._reassembler.feed(message)  # type: ignore[arg-type]
            if frame is not None:
                self._dispatch(frame)
        except FrameError as exc:
            log.warning("dropping peer %s: %s", self.remote_id or "?", exc)
            self.violation = True
            self.close_soon(f"protocol violation: {exc}", notify=False)

    def _dispatch(self, frame: Frame) -> None:
        if frame.type is FrameType.PING:
            return
        if frame.type is FrameType.BYE:
            self.close_soon(f"neighbour left: {frame.body.get('reason', '')}", notify=False)
        elif self.state is LinkState.ESTABLISHED:
            if frame.type in (FrameType.HELLO, FrameType.AUTH):
                raise FrameError(f"{frame.type.name} after the handshake")
            self._on_frame(self, frame)
        elif frame.type is FrameType.HELLO:
            if self._handshake.remote is not None:
                raise FrameError("second HELLO")
            self._handshake.accept_hello(frame.body, self.expected_node)
            self._send(FrameType.AUTH, self._handshake.make_auth(*self._fingerprints()))
            self._sent_auth = True
        elif frame.type is FrameType.AUTH:
            if not self._sent_auth:
                raise FrameError("AUTH before HELLO")
            local_fp, remote_fp = self._fingerprints()
            self._handshake.verify_auth(frame.body, local_fp, remote_fp)
            self.state = LinkState.ESTABLISHED
            self.expected_node = self._handshake.remote.node  # type: ignore[union-attr]
            self._on_established(self)
        else:
            raise FrameError(f"{frame.type.name} before the handshake completed")

    def _on_connection_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self.close_soon(f"connection {self._pc.connectionState}")

    async def _watch(self) -> None:
        """Abandon a link that does not finish its handshake, or that went silent."""
        settings = self._settings
        ticker = Ticker(settings.link_idle_timeout / 6)  # 0.5 s: a check, or a PING, per tick
        try:
            while self.state is not LinkState.CLOSED:
                stall = await ticker.tick()
                now = time.monotonic()
                if stall:
                    # We were not running (frozen, starved): that silence is ours, not theirs.
                    self.last_received = min(now, self.last_received + stall)
                    self.created = min(now, self.created + stall)
                if self.state is LinkState.CONNECTING:
                    if now - self.created > settings.connect_timeout:
                        self.close_soon("handshake timed out")
                elif now - self.last_received > settings.link_idle_timeout:
                    self.close_soon(f"no frame for {settings.link_idle_timeout:.1f}s")
                elif now - self.last_sent > settings.link_idle_timeout / 2:
                    # Keep the neighbour's idle check quiet. Half the timeout, not a third: at
                    # 1 s, PINGs raced the 1 s heartbeats and doubled an idle link's messages.
                    self._send(FrameType.PING, {})
        except asyncio.CancelledError:
            pass

    # -- closing -------------------------------------------------------------------------------
    def close_soon(self, reason: str, notify: bool = True) -> None:
        """Start closing (idempotent); safe to call from aiortc's synchronous callbacks."""
        if self._closing is not None:
            return
        self._closing = asyncio.get_running_loop().create_task(self.close(reason, notify))

    async def close(self, reason: str, notify: bool = True) -> None:
        """Close the link; with ``notify`` tell the neighbour first and let queued data drain."""
        if self.state is LinkState.CLOSED:
            return
        was_established = self.state is LinkState.ESTABLISHED
        self.state = LinkState.CLOSED
        self.close_reason = reason
        if self._closing is None:
            self._closing = asyncio.current_task()
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        if notify and was_established:
            self._send(FrameType.BYE, {"reason": reason})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.close_drain_timeout):
                    await self._drain_to(0, closing=True)
        self._drained.set()  # wake wait_buffered() callers: they see CLOSED and give up
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._pc.close(), timeout=5)
        log.info("link %s closed: %s", self.remote_id, reason)
        self._on_closed(self)
