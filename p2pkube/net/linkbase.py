"""What every link does, whatever carries it: frames, the handshake, liveness, closing.

A link is one ordered, reliable data channel to one neighbour. Natively aiortc carries it
(:mod:`p2pkube.net.link`), in a browser tab the page's RTCPeerConnection
(``p2pkube.browser.link``); both subclass :class:`LinkBase` and supply only the channel
primitives (send a message, queued bytes, the SDPs, open/close). Everything the protocol says
lives here, once:

* A link is usable only after the handshake (``handshake.py``) proved the neighbour's node id
  and cluster membership; before that it accepts nothing but HELLO, AUTH and BYE. Signing and
  checking are async (WebCrypto is), so the handshake runs in a task of its own; frames that
  arrive meanwhile wait, in order, in a bounded queue (a neighbour that finished first may
  already send state).
* Any protocol violation closes the link with a reason (``violation`` is then set, so the
  mesh bans the neighbour for a while).
* A watchdog abandons a link that does not finish its handshake within ``connect_timeout``,
  or that sends nothing for ``link_idle_timeout`` while what we send it does not drain
  either, and PINGs when this side has been quiet. A neighbour busy with a burst we send it
  (a 1,000-pod Job: megabytes, its loop saturated for seconds) may send nothing back for
  longer than that, but its transport keeps acknowledging our data: that link works.
* Liveness before bulk: a burst of state (a 1,000-pod transaction is ~1 MB per neighbour)
  waits in the link's own queue and is fed to the channel only while the channel holds less
  than ``send_window`` bytes; the small frames liveness lives on (SWIM, PING, small ROUTEs,
  ``URGENT_FRAMES``) go to the channel at once, so they wait behind at most that window, not
  behind the burst; and a carrier that can (the aiortc one) puts them ahead of that window
  too, behind the one message being sent. Without it a leader's probe answers queued behind
  megabytes for seconds and its peers declared it dead under load. Urgent frames may land
  between the fragments of a bulk frame; the receiver's :class:`Reassembler` expects that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol

from p2pkube.net.frames import (
    FRAGMENT_BYTES,
    URGENT_FRAMES,
    Frame,
    FrameError,
    FrameType,
    Reassembler,
    encode_frame,
    fragment,
)
from p2pkube.net.handshake import Handshake, Hello, sdp_fingerprint
from p2pkube.net.settings import TransportSettings
from p2pkube.ticker import Ticker

log = logging.getLogger(__name__)

EARLY_FRAMES = 256
"""Frames held while the handshake's signature check runs; more is a violation."""


class LinkState(Enum):
    CONNECTING = "connecting"
    ESTABLISHED = "established"
    CLOSED = "closed"


class LinkBase(ABC):
    """A link to one neighbour, from offer/answer through handshake to close."""

    def __init__(
        self,
        *,
        expected_node: str | None,
        session: str,
        initiator: bool,
        handshake: Handshake,
        settings: TransportSettings,
        on_established: Callable[[LinkBase], None],
        on_frame: Callable[[LinkBase, Frame], None],
        on_closed: Callable[[LinkBase], None],
    ) -> None:
        self.expected_node = expected_node
        self.session = session
        self.initiator = initiator
        self.state = LinkState.CONNECTING
        self.close_reason = ""
        self.violation = False
        """True when the link was closed because the neighbour broke the protocol."""
        self.opened = time.monotonic()
        """When this link was made; unlike ``created``, never moved for time we did not run."""
        self.created = self.opened
        self.last_received = self.created
        self.last_sent = self.created
        self.last_drained = float("-inf")
        """When the channel last drained to its low threshold: the neighbour acknowledged
        what we sent, so the path works even if it has sent nothing back for a while (a
        receiver busy with a burst from us; see the watchdog)."""
        self.bytes_sent = 0
        self.bytes_received = 0
        self.bytes_sent_by_type: Counter[str] = Counter()
        """Bytes sent per frame type (``SWIM``, ``SYNC``...): what a link's traffic is made of."""
        self.frames_sent_by_type: Counter[str] = Counter()
        self.frames_received_by_type: Counter[str] = Counter()
        self._handshake = handshake
        self._settings = settings
        self._on_established = on_established
        self._on_frame = on_frame
        self._on_closed = on_closed
        self._reassembler = Reassembler(settings.max_frame_bytes)
        self._sent_auth = False
        self._early: deque[Frame] = deque()
        self._handshaking: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        """Set when the channel's queue fell to its low threshold (see :meth:`wait_buffered`)."""
        self._paced: deque[bytes] = deque()
        """Messages of bulk frames not yet handed to the channel (see the module's docstring)."""
        self._paced_bytes = 0
        self._drain_limits: list[int] = []
        """The limits of the :meth:`wait_buffered` calls waiting now."""
        self._sdps = ("", "")
        """The local and the remote SDP as sent and received: the handshake binds their DTLS
        fingerprints. Not the connection's own descriptions: a browser re-serializes the
        remote one (keeping one of aiortc's several fingerprint lines)."""

    # -- what a carrier supplies -----------------------------------------------------------------
    @abstractmethod
    async def _negotiate_offer(self) -> str:
        """Create the offer, gather every candidate (no trickle), return the SDP."""

    @abstractmethod
    async def _negotiate_answer(self, offer_sdp: str) -> str:
        """Apply a remote offer, gather, return the answer SDP."""

    @abstractmethod
    async def _apply_answer(self, answer_sdp: str) -> None:
        """Apply the remote answer to our offer."""

    @abstractmethod
    def _channel_open(self) -> bool:
        """True while the data channel is open."""

    @abstractmethod
    def _channel_send(self, message: bytes) -> None:
        """Queue one message on the channel; may raise when the transport is dying."""

    def _channel_send_urgent(self, message: bytes) -> None:
        """Hand an urgent message to the channel, ahead of the bulk messages the carrier
        still queues when it can (by default, after them: at most ``send_window`` bytes)."""
        self._channel_send(message)

    @abstractmethod
    def _channel_buffered(self) -> int:
        """Bytes queued on the data channel that the transport has not taken yet."""

    @abstractmethod
    def _set_low_threshold(self, limit: int) -> None:
        """Have the carrier call :meth:`_on_buffered_low` once the queue falls to ``limit``."""

    @abstractmethod
    async def _close_connection(self) -> None:
        """Close the channel and the connection (bounded by the caller)."""

    def selected_pair(self) -> dict[str, str] | None:
        """The ICE candidate pair the link runs over, when the carrier can tell."""
        return None

    def carrier_counters(self) -> dict[str, int]:
        """The carrier's own counters, when it keeps any (empty by default)."""
        return {}

    # -- identity ------------------------------------------------------------------------------
    @property
    def remote(self) -> Hello | None:
        """The neighbour's verified HELLO once established (None before)."""
        return self._handshake.remote if self.state is LinkState.ESTABLISHED else None

    @property
    def remote_id(self) -> str | None:
        return self.remote.node if self.remote else self.expected_node

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.remote_id} {self.state.value} {self.session}>"

    # -- offer / answer ------------------------------------------------------------------------
    async def create_offer(self) -> str:
        """Start watching the link and return the offer SDP."""
        self._start_watchdog()
        offer = await self._negotiate_offer()
        self._sdps = (offer, "")
        return offer

    async def accept_offer(self, sdp: str) -> str:
        """Start watching the link, apply a remote offer and return our answer SDP."""
        self._start_watchdog()
        self._sdps = ("", sdp)
        answer = await self._negotiate_answer(sdp)
        self._sdps = (answer, sdp)
        return answer

    async def accept_answer(self, sdp: str) -> None:
        """Apply the remote answer to our offer."""
        self._sdps = (self._sdps[0], sdp)
        await self._apply_answer(sdp)

    def _start_watchdog(self) -> None:
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    # -- sending -------------------------------------------------------------------------------
    def send(self, frame_type: FrameType, body: Any) -> bool:
        """Queue a frame; False when the link is not established. Never blocks."""
        if self.state is not LinkState.ESTABLISHED:
            return False
        return self._send(frame_type, body)

    @property
    def frames_sent(self) -> int:
        return self.frames_sent_by_type.total()

    @property
    def frames_received(self) -> int:
        return self.frames_received_by_type.total()

    @property
    def buffered_amount(self) -> int:
        """Bytes queued toward the neighbour: in this link's own queue and on the channel."""
        return self._paced_bytes + self._channel_buffered()

    def _send(self, frame_type: FrameType, body: Any) -> bool:
        if not self._channel_open():
            return False
        data = encode_frame(frame_type, body)
        try:
            if frame_type in URGENT_FRAMES and len(data) <= FRAGMENT_BYTES:
                self._channel_send_urgent(data)
            else:
                for message in fragment(data):
                    self._paced.append(message)
                    self._paced_bytes += len(message)
                self._pump()
        except Exception as exc:  # InvalidStateError etc. on a dying transport
            self.close_soon(f"send failed: {exc}")
            return False
        self.bytes_sent += len(data)
        self.bytes_sent_by_type[frame_type.name] += len(data)
        self.frames_sent_by_type[frame_type.name] += 1
        self.last_sent = time.monotonic()
        if self.buffered_amount > self._settings.send_buffer_limit:
            self.close_soon("send buffer overflow (neighbour too slow)")
        return True

    def _pump(self) -> None:
        """Hand queued bulk messages to the channel while it holds less than ``send_window``,
        then have the carrier call back once it drained to half of that."""
        window = self._settings.send_window
        while self._paced and self._channel_buffered() < window:
            message = self._paced.popleft()
            self._paced_bytes -= len(message)
            self._channel_send(message)
        self._arm_low_threshold()

    def _arm_low_threshold(self) -> None:
        """The channel's low threshold: the lowest of what the pump (half the window, while
        it has a queue) and each :meth:`wait_buffered` caller (its limit, less what still
        waits in the link's queue) need to be woken at."""
        wanted = [limit - self._paced_bytes for limit in self._drain_limits]
        if self._paced:
            wanted.append(self._settings.send_window // 2)
        if wanted:
            self._set_low_threshold(max(0, min(wanted)))

    async def wait_buffered(self, limit: int) -> bool:
        """Wait until at most ``limit`` bytes are queued; False when the link closes first.
        The caller bounds the wait (``asyncio.timeout``)."""
        await self._drain_to(limit, closing=False)
        return self.state is not LinkState.CLOSED and self.buffered_amount <= limit

    async def _drain_to(self, limit: int, *, closing: bool) -> None:
        """Event driven: the carrier calls :meth:`_on_buffered_low` when the channel falls to
        the threshold, the lowest any waiter (or the pump) needs; every waiter wakes and
        re-checks its own condition, so none returns too early. Unless ``closing``, a close
        ends the wait (close() sets the event)."""
        while (
            self.buffered_amount > limit
            and self._channel_open()
            and (closing or self.state is not LinkState.CLOSED)
        ):
            self._drained.clear()
            self._drain_limits.append(limit)
            try:
                self._arm_low_threshold()
                await self._drained.wait()
            finally:
                self._drain_limits.remove(limit)

    # -- carrier events ------------------------------------------------------------------------
    def _on_buffered_low(self) -> None:
        self.last_drained = time.monotonic()
        if self._paced and self._channel_open():
            try:
                self._pump()
            except Exception as exc:  # InvalidStateError etc. on a dying transport
                self.close_soon(f"send failed: {exc}")
        self._drained.set()

    def _on_open(self) -> None:
        self._send(FrameType.HELLO, self._handshake.local.to_body())

    def _on_message(self, message: bytes | str) -> None:
        if self.state is LinkState.CLOSED:
            return
        self.last_received = time.monotonic()
        self.bytes_received += len(message)
        try:
            frame = self._reassembler.feed(message)
            if frame is not None:
                self._dispatch(frame)
        except FrameError as exc:
            self._violated(exc)

    def _violated(self, exc: FrameError) -> None:
        log.warning("dropping peer %s: %s", self.remote_id or "?", exc)
        self.violation = True
        self.close_soon(f"protocol violation: {exc}", notify=False)

    def _dispatch(self, frame: Frame) -> None:
        self.frames_received_by_type[frame.type.name] += 1
        if frame.type is FrameType.PING:
            return
        if frame.type is FrameType.BYE:
            self.close_soon(f"neighbour left: {frame.body.get('reason', '')}", notify=False)
        elif self.state is LinkState.ESTABLISHED and self._handshaking is None:
            self._deliver(frame)
        else:
            if len(self._early) >= EARLY_FRAMES:
                raise FrameError(f"more than {EARLY_FRAMES} frames before the handshake ended")
            self._early.append(frame)
            if self._handshaking is None:
                loop = asyncio.get_running_loop()
                self._handshaking = loop.create_task(self._run_handshake())

    def _deliver(self, frame: Frame) -> None:
        if frame.type in (FrameType.HELLO, FrameType.AUTH):
            raise FrameError(f"{frame.type.name} after the handshake")
        self._on_frame(self, frame)

    async def _run_handshake(self) -> None:
        """Owned by the link: the handshake frames in order, then (established) the frames
        that waited for it, delivered without a pause so none overtakes another."""
        try:
            while self._early and self.state is LinkState.CONNECTING:
                await self._handshake_step(self._early.popleft())
            while self._early and self.state is LinkState.ESTABLISHED:
                self._deliver(self._early.popleft())
        except FrameError as exc:
            self._violated(exc)
        except Exception as exc:  # a failed WebCrypto call, a closed carrier
            log.warning("handshake with %s failed: %s", self.remote_id or "?", exc)
            self.close_soon(f"handshake failed: {exc}", notify=False)
        finally:
            self._handshaking = None
            self._early.clear()

    async def _handshake_step(self, frame: Frame) -> None:
        if frame.type is FrameType.HELLO:
            if self._handshake.remote is not None:
                raise FrameError("second HELLO")
            self._handshake.accept_hello(frame.body, self.expected_node)
            auth = await self._handshake.make_auth(*self._fingerprints())
            if self.state is LinkState.CONNECTING:
                self._send(FrameType.AUTH, auth)
                self._sent_auth = True
        elif frame.type is FrameType.AUTH:
            if not self._sent_auth:
                raise FrameError("AUTH before HELLO")
            remote = await self._handshake.verify_auth(frame.body, *self._fingerprints())
            if self.state is not LinkState.CONNECTING:
                return
            self.state = LinkState.ESTABLISHED
            self.expected_node = remote.node
            self._carrier_knows_peer(remote.kind)
            self._on_established(self)
        else:
            raise FrameError(f"{frame.type.name} before the handshake completed")

    @property
    def watchdog_interval(self) -> float:
        """How often the watchdog looks at the link (0.5 s: a check, or a PING, per tick), on
        the process's beat (`p2pkube.ticker`), which a carrier's own chores may share."""
        return self._settings.link_idle_timeout / 6

    def _carrier_knows_peer(self, kind: str) -> None:  # noqa: B027 - optional hook
        """The handshake proved the neighbour's kind (native or browser): a carrier may tune
        itself to the stack at the other end. Nothing by default."""

    def _fingerprints(self) -> tuple[str, str]:
        local, remote = self._sdps
        return sdp_fingerprint(local), sdp_fingerprint(remote)

    async def _watch(self) -> None:
        """Abandon a link that does not finish its handshake, or that went silent."""
        settings = self._settings
        ticker = Ticker(self.watchdog_interval)
        try:
            while self.state is not LinkState.CLOSED:
                stall = await ticker.tick()
                now = time.monotonic()
                if stall:
                    # We were not running (frozen, starved): that silence is ours, not theirs.
                    self.last_received = min(now, self.last_received + stall)
                    self.last_drained = min(now, self.last_drained + stall)
                    self.created = min(now, self.created + stall)
                if self.state is LinkState.CONNECTING:
                    if now - self.created > settings.connect_timeout:
                        self.close_soon("handshake timed out")
                elif now - max(self.last_received, self.last_drained) > settings.link_idle_timeout:
                    self.close_soon(f"no frame for {settings.link_idle_timeout:.1f}s")
                elif now - self.last_sent > settings.link_idle_timeout / 2:
                    # Keep the neighbour's idle check quiet. Half the timeout, not a third: at
                    # 1 s, PINGs raced the old 1 s heartbeats and doubled an idle link's
                    # messages (SWIM traffic on a link now often resets this wait).
                    self._send(FrameType.PING, {})
        except asyncio.CancelledError:
            pass

    # -- closing -------------------------------------------------------------------------------
    def close_soon(self, reason: str, notify: bool = True) -> None:
        """Start closing (idempotent); safe to call from the carrier's synchronous callbacks."""
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
        for task in (self._watchdog, self._handshaking):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if notify and was_established:
            self._send(FrameType.BYE, {"reason": reason})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.close_drain_timeout):
                    await self._drain_to(0, closing=True)
        self._paced.clear()
        self._paced_bytes = 0
        self._drained.set()  # wake wait_buffered() callers: they see CLOSED and give up
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):  # not wait_for: on 3.11 it can drop a cancel
                await self._close_connection()
        log.info("link %s closed: %s", self.remote_id, reason)
        self._on_closed(self)


class LinkFactory(Protocol):
    """The transport seam: makes a link over the platform's carrier (natively
    :func:`p2pkube.net.link.peer_link_factory`'s aiortc links, in a tab
    ``p2pkube.browser.link.browser_link_factory``'s), with :class:`LinkBase`'s arguments.
    The mesh only calls it, so it imports no carrier itself."""

    def __call__(
        self,
        *,
        expected_node: str | None,
        session: str,
        initiator: bool,
        handshake: Handshake,
        settings: TransportSettings,
        on_established: Callable[[LinkBase], None],
        on_frame: Callable[[LinkBase, Frame], None],
        on_closed: Callable[[LinkBase], None],
    ) -> LinkBase: ...
