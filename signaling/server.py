"""The p2pkube signaling server: an aiohttp WebSocket relay with rooms per cluster.

The server introduces peers and nothing more.  It admits a socket to the room
of a cluster when its ``join`` answers the server's challenge with a mac keyed
by that cluster's signaling key (so the joiner holds the token, which the
server itself never sees) and a signature by the node key its peer id is
derived from (so nobody can take another node's place), tells it who is
present, relays
offer/answer/ICE messages between two named peers of that room, and forgets
everything when the socket goes.  Rooms are built from live sockets only, so a
restarted server loses nothing that the agents do not re-announce on their
own when they reconnect; a running cluster keeps its WebRTC links meanwhile.

Structure (one object per concern, aiortc style):

* :class:`SignalingSettings`: every limit and timing, with its default;
* :class:`TokenBucket`: per-socket rate limit;
* :class:`JoinThrottle`: failed joins per client address;
* :class:`_Session`: one WebSocket with its bounded outbox and writer task;
* :class:`_Room`: the live sessions of one cluster;
* :class:`SignalingState`: verifiers, rooms and sessions; the WebSocket
  handler;
* :class:`StaticFiles`: optionally, the browser node's page and bundle
  (``web_root``, built by ``make browser``) from the same origin;
* :func:`create_app`, :class:`SignalingServer`, :func:`run_server`: the ways
  to run it (extend the app, embed in tests, or block in a CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import secrets
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from p2pkube.net.jointoken import (
    KEY_BYTES,
    Verifier,
    join_mac,
    node_id_from_public_key,
)
from p2pkube.net.signaling_wire import (
    FATAL_CLOSE_CODES,
    NONCE_BYTES,
    WS_PATH,
    ErrorCode,
    Join,
    PeerRecord,
    ProtocolError,
    Signal,
    challenge_message,
    encode,
    error_message,
    parse_client_message,
    peer_joined_message,
    peer_left_message,
    signal_from_message,
    welcome_message,
)

__all__ = [
    "STATE_KEY",
    "JoinThrottle",
    "SignalingServer",
    "SignalingSettings",
    "SignalingState",
    "StaticFiles",
    "TokenBucket",
    "create_app",
    "run_server",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SignalingSettings:
    """Every limit and timing of the server, each with a safe default.

    The defaults suit a cluster of a few hundred agents plus browser tabs on
    one small server; tests shrink the timings to run fast.
    """

    #: Largest accepted text message, in UTF-8 bytes (64 KiB).  An SDP offer
    #: is a few KiB; anything much larger is abuse.  Bigger messages get the
    #: fatal ``too-large`` error.
    max_message_bytes: int = 64 * 1024
    #: Frames larger than ``max_message_bytes * hard_limit_factor`` are cut by
    #: the WebSocket layer itself (close 1009) before they are read in full, so
    #: a hostile client cannot make the server buffer an unbounded frame.
    hard_limit_factor: int = 4
    #: Sustained messages per second a socket may send (token bucket rate).
    messages_per_second: float = 50.0
    #: Token bucket capacity: a burst of this many messages is accepted at once.
    rate_burst: int = 200
    #: A socket that has more than this many messages dropped by the rate
    #: limit within ``rate_limit_window`` seconds is closed with the fatal
    #: ``rate-limited`` error (4005); below that, messages are only dropped.
    rate_limit_max_drops: int = 200
    #: Window (seconds) over which dropped messages are counted.
    rate_limit_window: float = 10.0
    #: At most one non-fatal ``rate-limited`` warning per this many seconds,
    #: so the warnings do not become a flood of their own.
    rate_limit_warning_interval: float = 1.0
    #: Most peers in one room (cluster); a join beyond gets ``room-full``.
    max_peers_per_room: int = 256
    #: Most WebSocket connections in total, joined or not; beyond, a new
    #: socket is told ``room-full`` and closed.  Rooms exist only for the
    #: tokens served, so this also bounds every room together.
    max_connections: int = 4096
    #: Seconds of silence before the server pings a socket (aiohttp
    #: ``heartbeat=``); a socket that does not answer within half of this is
    #: dropped, so a vanished agent shows up as ``peer-left`` promptly.
    heartbeat: float = 10.0
    #: Seconds a new socket has to send its ``join`` (``join-timeout``).
    join_timeout: float = 5.0
    #: Messages queued for one socket before it counts as stuck; a socket
    #: whose queue overflows is closed with WebSocket code 1013 (try again).
    send_queue_size: int = 256
    #: Seconds one write to a socket may take before the socket is aborted.
    send_timeout: float = 10.0
    #: Seconds to wait for the peer's close frame when closing a socket.
    close_timeout: float = 2.0
    #: Failed joins per second one client address may make in the long run (a
    #: token bucket per address; IPv6 addresses count per /64).  A join that
    #: fails (wrong mac, wrong identity, malformed, too slow) spends a token;
    #: while an address has none, its joins are refused with ``rate-limited``
    #: without being checked, so guessing the token from one address gets at
    #: most this many tries a second.
    join_failures_per_second: float = 2.0
    #: Failed joins one address may make at once before the rate applies (the
    #: bucket's capacity): room for an operator's typo or a few restarts.
    join_failure_burst: int = 5
    #: Client addresses whose failed joins are remembered, at most; beyond,
    #: the one that failed longest ago is forgotten (the table never grows).
    join_failure_addresses: int = 4096
    #: Seconds a throttled join is held before it is refused, so a throttled
    #: client that reconnects at once does not make the server spin.
    join_refusal_delay: float = 1.0
    #: At most one log line per address per this many seconds about refused
    #: (throttled) joins, with their count; every checked failure is logged.
    join_refusal_log_interval: float = 10.0

    def __post_init__(self) -> None:
        """Reject settings that would make the server misbehave."""
        positive = {
            "max_message_bytes": self.max_message_bytes,
            "hard_limit_factor": self.hard_limit_factor,
            "messages_per_second": self.messages_per_second,
            "rate_burst": self.rate_burst,
            "rate_limit_window": self.rate_limit_window,
            "max_peers_per_room": self.max_peers_per_room,
            "max_connections": self.max_connections,
            "heartbeat": self.heartbeat,
            "join_timeout": self.join_timeout,
            "send_timeout": self.send_timeout,
            "close_timeout": self.close_timeout,
            "join_failures_per_second": self.join_failures_per_second,
            "join_failure_burst": self.join_failure_burst,
            "join_failure_addresses": self.join_failure_addresses,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"SignalingSettings.{name} must be positive, got {value}")
        if self.rate_limit_max_drops < 0 or self.rate_limit_warning_interval < 0:
            raise ValueError("SignalingSettings rate-limit drop settings must be >= 0")
        if self.join_refusal_delay < 0 or self.join_refusal_log_interval < 0:
            raise ValueError("SignalingSettings join refusal settings must be >= 0")
        if self.send_queue_size < 2:
            # Room for an error message plus the close marker.
            raise ValueError("SignalingSettings.send_queue_size must be at least 2")

    @property
    def hard_message_bytes(self) -> int:
        """The WebSocket layer's own frame limit (see ``hard_limit_factor``)."""
        return self.max_message_bytes * self.hard_limit_factor


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> bool:
        """Spend one token if there is one; False means "over the limit"."""
        if self.ready():
            self._tokens -= 1.0
            return True
        return False

    def ready(self) -> bool:
        """True if a token is there to spend (nothing is spent)."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        return self._tokens >= 1.0


def throttle_key(remote: str) -> str:
    """The unit failed joins are counted per: the IPv4 address, or the IPv6 /64.

    One IPv6 host usually has a whole /64 to pick addresses from, so counting
    per address would give it billions of buckets.
    """
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class _Failures:
    """One address's failed joins: its bucket, and its refusals not logged yet."""

    bucket: TokenBucket
    refused: int = 0
    logged: float = float("-inf")


class JoinThrottle:
    """Failed joins per client address, in a table of bounded size.

    Each address (:func:`throttle_key`) that failed a join has a
    :class:`TokenBucket` of ``join_failure_burst`` tokens refilled at
    ``join_failures_per_second``; each failure spends one.  An address without
    a token is refused before its join is checked.  Addresses that never failed
    have no entry, so honest clients cost nothing; the table keeps the
    ``join_failure_addresses`` most recent failers (least recently failed go
    first), so it cannot be grown without bound.
    """

    def __init__(self, settings: SignalingSettings, clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._clock = clock
        self._entries: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def allows(self, remote: str) -> bool:
        """True if a join from ``remote`` may be checked now."""
        entry = self._entries.get(throttle_key(remote))
        return entry is None or entry.bucket.ready()

    def failed(self, remote: str) -> None:
        """Count one failed join from ``remote``."""
        key = throttle_key(remote)
        entry = self._entries.get(key)
        if entry is None:
            settings = self._settings
            bucket = TokenBucket(
                settings.join_failures_per_second, settings.join_failure_burst, self._clock
            )
            entry = self._entries[key] = _Failures(bucket)
            while len(self._entries) > settings.join_failure_addresses:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        entry.bucket.take()

    def refused(self, remote: str) -> int:
        """Count a join refused unchecked; return how many to log now (0: not yet)."""
        entry = self._entries.get(throttle_key(remote))
        if entry is None:
            return 0
        entry.refused += 1
        now = self._clock()
        if now - entry.logged < self._settings.join_refusal_log_interval:
            return 0
        count, entry.refused, entry.logged = entry.refused, 0, now
        return count


@dataclass(frozen=True, slots=True)
class _Close:
    """Outbox marker: close the socket with this WebSocket close code."""

    code: int
    reason: str


class _Session:
    """One WebSocket: its identity once joined, its outbox and its writer.

    Only the writer task writes to the socket; everyone else enqueues with
    :meth:`send` (never blocks), so a slow receiver cannot stall the peer
    whose message is being relayed to it.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        remote: str,
        settings: SignalingSettings,
    ) -> None:
        self.ws = ws
        self.remote = remote
        self._transport = transport
        self.settings = settings
        self.record: PeerRecord | None = None
        self.room: _Room | None = None
        self.closing = False
        self.bucket = TokenBucket(settings.messages_per_second, settings.rate_burst)
        self._drops = 0
        self._drop_window_start = time.monotonic()
        self._last_warning = float("-inf")
        self._outbox: asyncio.Queue[str | _Close] = asyncio.Queue(settings.send_queue_size)
        self._writer = asyncio.create_task(self._write_loop(), name=f"signaling-writer {remote}")

    @property
    def label(self) -> str:
        """Short description for log lines (never includes the token)."""
        if self.record is None:
            return f"{self.remote} (not joined)"
        assert self.room is not None
        return f"{self.record.peer}/{self.record.name} in {self.room.cluster} from {self.remote}"

    def send(self, message: dict[str, Any]) -> None:
        """Queue ``message`` for this socket; close it if it is stuck."""
        self.send_text(encode(message))

    def send_text(self, text: str) -> None:
        """Queue an encoded message (see :meth:`send`).

        Never blocks: a socket that lets ``send_queue_size`` messages pile up
        is not reading, and is closed with 1013 (try again later) rather than
        allowed to hold memory or slow its senders down.
        """
        if self.closing:
            return
        try:
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            logger.warning("signaling: %s is not reading; closing it", self.label)
            self.close(WSCloseCode.TRY_AGAIN_LATER, "send queue full")

    def fail(self, code: ErrorCode, message: str, *, log: bool = True) -> None:
        """Send a fatal error and close with its 4000+ close code.

        Pending messages are dropped: after a fatal error nothing else
        matters, and the outbox must have room for the error itself.
        ``log=False`` when the caller logs it its own way (failed joins).
        """
        if self.closing:
            return
        if log:
            logger.info("signaling: %s rejected: %s: %s", self.label, code, message)
        self.close(FATAL_CLOSE_CODES[code], str(code), error_message(code, message))

    def warn(self, code: ErrorCode, message: str, *, to: str | None = None) -> None:
        """Send a non-fatal error."""
        self.send(error_message(code, message, to=to))

    def admit_rate(self) -> bool | None:
        """Apply the rate limit to one incoming message.

        Returns True to process it, False to drop it silently (a warning has
        been queued if due), None when the socket has been closed for
        sustained abuse.
        """
        if self.bucket.take():
            return True
        now = time.monotonic()
        if now - self._drop_window_start > self.settings.rate_limit_window:
            self._drop_window_start = now
            self._drops = 0
        self._drops += 1
        limit = self.settings.messages_per_second
        if self._drops > self.settings.rate_limit_max_drops:
            self.fail(
                ErrorCode.RATE_LIMITED,
                f"sustained rate over {limit:g} messages/s; {self._drops} messages dropped",
            )
            return None
        if now - self._last_warning >= self.settings.rate_limit_warning_interval:
            self._last_warning = now
            self.warn(
                ErrorCode.RATE_LIMITED,
                f"over {limit:g} messages/s (burst {self.settings.rate_burst}); "
                "messages are being dropped",
            )
        return False

    def close(self, code: int, reason: str, last_message: dict[str, Any] | None = None) -> None:
        """Close with WebSocket ``code`` after sending ``last_message`` if given.

        Pending messages are dropped; idempotent (the first close wins).
        """
        if self.closing:
            return
        self.closing = True
        while not self._outbox.empty():
            self._outbox.get_nowait()
        if last_message is not None:
            self._outbox.put_nowait(encode(last_message))
        self._outbox.put_nowait(_Close(code, reason))

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self._outbox.get()
                if isinstance(item, _Close):
                    async with asyncio.timeout(self.settings.close_timeout + 1.0):
                        await self.ws.close(code=item.code, message=item.reason.encode())
                    return
                async with asyncio.timeout(self.settings.send_timeout):
                    await self.ws.send_str(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # connection reset, timeout, closed socket...
            logger.debug("signaling: write to %s failed: %r", self.label, exc)
            self.closing = True
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (last resort)."""
        transport = self._transport
        if isinstance(transport, asyncio.Transport) and not transport.is_closing():
            transport.abort()

    async def finish(self) -> None:
        """Let queued messages (e.g. a final error) go out, then stop the writer.

        Bounded by the send and close timeouts; whatever is left is cut.
        """
        self.close(WSCloseCode.GOING_AWAY, "")
        budget = self.settings.send_timeout + self.settings.close_timeout + 1.0
        try:
            async with asyncio.timeout(budget):
                await asyncio.shield(self._writer)
        except TimeoutError:
            self.abort()
        except asyncio.CancelledError:
            self._writer.cancel()
            raise
        finally:
            if not self._writer.done():
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer


@dataclass(slots=True)
class _Room:
    """The live sessions of one cluster, by peer id."""

    cluster: str
    sessions: dict[str, _Session] = field(default_factory=dict)

    def broadcast(self, message: dict[str, Any], *, exclude: _Session | None = None) -> None:
        """Queue ``message`` for every member but ``exclude`` (encoded once)."""
        text = encode(message)
        for session in list(self.sessions.values()):
            if session is not exclude:
                session.send_text(text)


def as_verifiers(credentials: Sequence[str | Verifier]) -> tuple[Verifier, ...]:
    """The verifiers of the clusters to serve: tokens are turned into theirs (and not kept)."""
    verifiers = (c if isinstance(c, Verifier) else Verifier.from_token(c) for c in credentials)
    return tuple(dict.fromkeys(verifiers))


def signature_valid(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s Ed25519 signature of ``message``.

    Synchronous on purpose (~0.1 ms): a join is checked and its failure counted
    without an ``await`` in between, so parallel guesses cannot all pass the
    throttle before the first one is counted.
    """
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class SignalingState:
    """Everything the server holds: verifiers, rooms, live sessions, failed joins.

    Per cluster, only its :class:`~p2pkube.net.jointoken.Verifier` is kept: the
    room id and the signaling key derived from the token.  Tokens given to it
    are turned into verifiers on construction and dropped; nothing it holds
    passes the link handshake (that key is derived separately).  Rooms and
    sessions are built from live sockets only, which is what makes a restart
    harmless.
    """

    def __init__(self, verifiers: Sequence[Verifier], settings: SignalingSettings) -> None:
        if not verifiers:
            raise ValueError("the signaling server needs at least one join token or verifier")
        self.settings = settings
        self._keys: dict[str, bytes] = {v.cluster: v.key for v in verifiers}
        # Stands in for the key of a cluster not served, so that a join naming
        # one costs the same as a join with a wrong mac.
        self._decoy = secrets.token_bytes(KEY_BYTES)
        self.rooms: dict[str, _Room] = {}
        self.sessions: set[_Session] = set()
        self.throttle = JoinThrottle(settings)

    @property
    def verifiers(self) -> tuple[Verifier, ...]:
        """What the server keeps of each cluster (for inspection; never a token)."""
        return tuple(Verifier(cluster, key) for cluster, key in self._keys.items())

    def check_mac(self, join: Join, transcript: bytes) -> bool:
        """True if ``join``'s mac is the served cluster's; compared in constant time."""
        key = self._keys.get(join.cluster, self._decoy)
        valid = hmac.compare_digest(join_mac(key, transcript), join.mac)
        return valid and join.cluster in self._keys

    # -- the WebSocket handler --------------------------------------------

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """``GET /ws``: serve one peer's socket from join to goodbye."""
        settings = self.settings
        ws = web.WebSocketResponse(
            heartbeat=settings.heartbeat,
            max_msg_size=settings.hard_message_bytes,
            timeout=settings.close_timeout,
            compress=False,
            autoping=True,
        )
        if not ws.can_prepare(request).ok:
            return web.Response(
                status=426,
                text="this endpoint speaks WebSocket only\n",
                headers={"Upgrade": "websocket"},
            )
        await ws.prepare(request)
        session = _Session(ws, request.transport, request.remote or "?", settings)
        full = len(self.sessions) >= settings.max_connections
        self.sessions.add(session)
        try:
            if full:
                session.fail(
                    ErrorCode.ROOM_FULL,
                    f"server is at its limit of {settings.max_connections} connections",
                )
            else:
                await self._serve(session)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Log here, tell the client only that we failed: never a traceback.
            # 1011 is the standard "internal error" close code.
            logger.exception("signaling: internal error serving %s", session.label)
            session.close(WSCloseCode.INTERNAL_ERROR, "internal server error")
        finally:
            self._leave(session)
            self.sessions.discard(session)
            await session.finish()
        return ws

    async def _serve(self, session: _Session) -> None:
        if not await self._admit(session):
            return
        ws = session.ws
        while not session.closing:
            msg = await ws.receive()
            try:
                text = self._frame_text(session, msg)
            except ProtocolError as exc:
                session.fail(exc.code, exc.message)
                return
            if text is None:
                return
            admitted = session.admit_rate()
            if not admitted:
                continue
            try:
                message = parse_client_message(text)
            except ProtocolError as exc:
                session.fail(exc.code, exc.message)
                return
            if isinstance(message, Join):
                session.fail(ErrorCode.MALFORMED, "already joined: 'join' may be sent only once")
                return
            self._relay(session, message)

    async def _admit(self, session: _Session) -> bool:
        """Challenge, read the ``join``, check it and enter the room; False if refused.

        An address over its failed-join budget is refused before it gets a
        challenge and again before its join is checked (``rate-limited``).
        """
        if not self.throttle.allows(session.remote):
            await self._refuse_throttled(session)
            return False
        nonce = secrets.token_bytes(NONCE_BYTES)
        session.send(challenge_message(nonce))
        try:
            async with asyncio.timeout(self.settings.join_timeout):
                msg = await session.ws.receive()
        except TimeoutError:
            self._join_failed(
                session,
                ErrorCode.JOIN_TIMEOUT,
                f"no join message within {self.settings.join_timeout:g} seconds",
            )
            return False
        try:
            text = self._frame_text(session, msg)
            if text is None:
                return False
            join = parse_client_message(text)
        except ProtocolError as exc:
            self._join_failed(session, exc.code, exc.message)
            return False
        if not isinstance(join, Join):
            self._join_failed(session, ErrorCode.MALFORMED, "first message must be 'join'")
            return False
        if not self.throttle.allows(session.remote):
            await self._refuse_throttled(session)
            return False
        # No await from here on: the check and the count of a failure are one step.
        return self._join(session, join, join.transcript(nonce))

    def _frame_text(self, session: _Session, msg: WSMessage) -> str | None:
        """Return the text of a data frame, or None if the socket is done.

        Raises :class:`ProtocolError` for a frame the protocol refuses
        (too large, binary).
        """
        if msg.type == WSMsgType.TEXT:
            text: str = msg.data
            limit = self.settings.max_message_bytes
            if len(text) > limit or len(text.encode("utf-8")) > limit:
                raise ProtocolError(ErrorCode.TOO_LARGE, f"message exceeds {limit} bytes")
            return text
        if msg.type == WSMsgType.BINARY:
            raise ProtocolError(
                ErrorCode.MALFORMED, "binary frames are not accepted; send JSON in text frames"
            )
        if msg.type == WSMsgType.ERROR:
            logger.info("signaling: %s dropped: %s", session.label, msg.data)
        return None

    def _join_failed(self, session: _Session, code: ErrorCode, message: str) -> None:
        """Refuse a join: count it against the address, log it with the address, close."""
        self.throttle.failed(session.remote)
        logger.warning("signaling: failed join from %s: %s: %s", session.remote, code, message)
        session.fail(code, message, log=False)

    async def _refuse_throttled(self, session: _Session) -> None:
        """Refuse a join unchecked, after ``join_refusal_delay``: its address failed too often."""
        count = self.throttle.refused(session.remote)
        settings = self.settings
        if count:
            logger.warning(
                "signaling: refused %d join(s) from %s unchecked: over %g failed joins/s",
                count,
                session.remote,
                settings.join_failures_per_second,
            )
        await asyncio.sleep(settings.join_refusal_delay)
        session.fail(
            ErrorCode.RATE_LIMITED,
            "too many failed joins from this address; try again in a few seconds",
            log=False,  # counted, and logged once per join_refusal_log_interval
        )

    def _join(self, session: _Session, join: Join, transcript: bytes) -> bool:
        """Check ``join`` against the challenge's ``transcript``; admit it or fail it."""
        if not self.check_mac(join, transcript):
            self._join_failed(
                session, ErrorCode.BAD_TOKEN, "the join token is not valid for this server"
            )
            return False
        if node_id_from_public_key(join.pub) != join.peer:
            self._join_failed(
                session,
                ErrorCode.BAD_IDENTITY,
                f"peer id {join.peer!r} is not the id of the public key sent",
            )
            return False
        if not signature_valid(join.pub, join.sig, transcript):
            self._join_failed(
                session, ErrorCode.BAD_IDENTITY, "the signature does not verify with the key sent"
            )
            return False
        room_id = join.cluster
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = _Room(room_id)
        old = room.sessions.get(join.peer)
        others = len(room.sessions) - (1 if old is not None else 0)
        if others >= self.settings.max_peers_per_room:
            if not room.sessions:
                del self.rooms[room_id]
            session.fail(
                ErrorCode.ROOM_FULL,
                f"cluster {room_id} already has {others} peers "
                f"(limit {self.settings.max_peers_per_room})",
            )
            return False
        if old is not None:
            # The same node key, again: a restarted agent must not be locked out by its own
            # stale socket.
            del room.sessions[join.peer]
            room.broadcast(peer_left_message(join.peer))
            old.fail(ErrorCode.REPLACED, "another connection joined with this node's key")
            logger.info("signaling: %s replaced by a new socket from %s", old.label, session.remote)
        record = PeerRecord(join.peer, join.name, join.kind)
        present = [s.record for s in room.sessions.values() if s.record is not None]
        session.record = record
        session.room = room
        room.sessions[join.peer] = session
        session.send(welcome_message(room_id, join.peer, present))
        room.broadcast(peer_joined_message(record), exclude=session)
        logger.info(
            "signaling: join %s (%s), %d peers in room",
            session.label,
            join.kind,
            len(room.sessions),
        )
        return True

    def _relay(self, session: _Session, message: Signal) -> None:
        room = session.room
        assert room is not None and session.record is not None
        if room.sessions.get(session.record.peer) is not session:
            return  # replaced meanwhile; its messages are no longer its own
        target = room.sessions.get(message.to)
        if target is None or target.closing:  # a closing peer is as good as gone
            session.warn(
                ErrorCode.UNKNOWN_PEER,
                f"peer {message.to!r} is not in this cluster's room",
                to=message.to,
            )
            return
        target.send(signal_from_message(session.record.peer, message.data))

    def _leave(self, session: _Session) -> None:
        room = session.room
        record = session.record
        if room is None or record is None:
            return
        if room.sessions.get(record.peer) is session:
            del room.sessions[record.peer]
            room.broadcast(peer_left_message(record.peer))
            logger.info("signaling: leave %s, %d peers in room", session.label, len(room.sessions))
        if not room.sessions and self.rooms.get(room.cluster) is room:
            del self.rooms[room.cluster]

    async def close_all(self, app: web.Application | None = None) -> None:
        """Close every socket with 1001 (going away); used on shutdown.

        Agents see the close at once and start reconnecting instead of
        waiting for a heartbeat to fail.
        """
        sessions = list(self.sessions)
        for session in sessions:
            if not session.closing:
                session.close(WSCloseCode.GOING_AWAY, "server shutting down")
        if sessions:
            await asyncio.gather(*(s.finish() for s in sessions), return_exceptions=True)


#: Application key of the :class:`SignalingState` (``app[STATE_KEY]``).
STATE_KEY: Final = web.AppKey("signaling_state", SignalingState)


async def _healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: liveness for container health checks."""
    return web.Response(text="ok")


#: Content types of the browser bundle, by file suffix; others are application/octet-stream.
WEB_CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".whl": "application/octet-stream",
    ".zip": "application/octet-stream",
    ".gz": "application/gzip",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

#: Paths under the web root whose content never changes (the version is in the path), so
#: browsers may keep them a year; everything else is revalidated on each use (ETag).
IMMUTABLE_PREFIXES: Final = ("pyodide/",)

#: Sent with every file: a cross-origin isolated page (``crossOriginIsolated``), so the pod
#: workers can sleep with ``Atomics.wait`` on a SharedArrayBuffer.
ISOLATION_HEADERS: Final = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class StaticFiles:
    """``GET /<path>``: the files of one directory (the browser node bundle), nothing else;
    installed as a fallback middleware by :func:`create_app`.

    ``/`` is ``index.html``. A path with an empty, ``.``, ``..`` or hidden segment, a
    backslash or a NUL, one that is not a regular file, or one that resolves (symlinks
    included) outside the root is 404. aiohttp's :class:`~aiohttp.web.FileResponse` does the
    rest: ``ETag``/``Last-Modified`` and conditional requests, ranges, ``HEAD``, and a
    pre-compressed ``NAME.gz`` sibling for clients that accept gzip.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ValueError(f"web root {root} is not a directory")

    def resolve(self, rel: str) -> Path | None:
        """The file ``rel`` names under the root, or None if it must not be served."""
        if rel == "":
            rel = "index.html"
        if "\\" in rel or "\0" in rel:
            return None
        parts = rel.split("/")
        if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
            return None
        try:
            path = self.root.joinpath(*parts).resolve()
        except (OSError, ValueError):
            return None
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def response(self, rel: str) -> web.StreamResponse:
        """The response for ``GET /<rel>`` (``rel`` percent-decoded); 404 if not served."""
        path = self.resolve(rel)
        if path is None:
            raise web.HTTPNotFound()
        rel = path.relative_to(self.root).as_posix()
        headers = dict(ISOLATION_HEADERS)
        headers["Content-Type"] = WEB_CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        if rel.startswith(IMMUTABLE_PREFIXES):
            headers["Cache-Control"] = "public, max-age=31536000, immutable"
        else:
            headers["Cache-Control"] = "no-cache"
        return web.FileResponse(path, headers=headers)

    def middleware(self) -> Any:
        """An aiohttp middleware serving the files where no route matched (GET and HEAD), so
        routes added to the application later still take precedence."""

        @web.middleware
        async def static_fallback(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.method in ("GET", "HEAD") and isinstance(
                request.match_info.http_exception, web.HTTPNotFound
            ):
                return self.response(request.path.removeprefix("/"))
            response: web.StreamResponse = await handler(request)
            return response

        return static_fallback


def create_app(
    tokens: Sequence[str | Verifier],
    settings: SignalingSettings | None = None,
    *,
    web_root: Path | None = None,
) -> web.Application:
    """Build the signaling web application for the clusters of ``tokens``.

    ``tokens`` are join tokens or :class:`~p2pkube.net.jointoken.Verifier` s; a
    token is turned into its verifier here and not kept (:func:`as_verifiers`).

    Routes: ``GET /ws`` (the protocol) and ``GET /healthz``; with ``web_root``, a ``GET`` or
    ``HEAD`` that no route matches serves a file of that directory (:class:`StaticFiles`: the
    browser node's page at ``/``), else every other path is 404.  The result is an ordinary
    :class:`aiohttp.web.Application`, so others may add routes before it is started (they
    take precedence over the files).  The state is at ``app[STATE_KEY]``.
    """
    state = SignalingState(as_verifiers(tokens), settings or SignalingSettings())
    middlewares = [] if web_root is None else [StaticFiles(web_root).middleware()]
    app = web.Application(middlewares=middlewares)
    app[STATE_KEY] = state
    app.router.add_get(WS_PATH, state.handle_ws)
    app.router.add_get("/healthz", _healthz)
    app.on_shutdown.append(state.close_all)
    return app


class SignalingServer:
    """The signaling server, embeddable in a running event loop.

    ``port=0`` binds a free port; :attr:`port` and :attr:`url` tell which
    after :meth:`start`.  Pass ``app`` to serve an application built (and
    extended) with :func:`create_app`, or ``web_root`` to serve the browser
    node's bundle too (:attr:`http_url` is its page).
    """

    def __init__(
        self,
        tokens: Sequence[str | Verifier] | None = None,
        settings: SignalingSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        app: web.Application | None = None,
        web_root: Path | None = None,
    ) -> None:
        if app is None:
            if tokens is None:
                raise ValueError("SignalingServer needs tokens or an app")
            app = create_app(tokens, settings, web_root=web_root)
        self.app = app
        self.host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def state(self) -> SignalingState:
        """The server's state (verifiers, rooms, sessions, failed joins)."""
        return self.app[STATE_KEY]

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("SignalingServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """The WebSocket URL agents connect to, e.g. ``ws://127.0.0.1:8765/ws``."""
        return f"ws://{self._authority}{WS_PATH}"

    @property
    def http_url(self) -> str:
        """The HTTP base URL, e.g. ``http://127.0.0.1:8765/`` (the browser node's page)."""
        return f"http://{self._authority}/"

    @property
    def _authority(self) -> str:
        """``host:port`` for a URL (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving."""
        if self._runner is not None:
            raise RuntimeError("SignalingServer already started")
        settings = self.state.settings
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=settings.send_timeout + settings.close_timeout + 2.0,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])
        logger.info("signaling: listening on %s", self.url)

    async def stop(self) -> None:
        """Close every socket (1001) and stop listening; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            logger.info("signaling: stopped")

    async def __aenter__(self) -> SignalingServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def run_server(
    host: str,
    port: int,
    tokens: Sequence[str | Verifier],
    settings: SignalingSettings | None = None,
    *,
    on_ready: Callable[[SignalingServer], None] | None = None,
    web_root: Path | None = None,
) -> None:
    """Serve the clusters of ``tokens`` (tokens or verifiers, see :func:`create_app`) until
    SIGINT or SIGTERM; blocking (for the command line).

    ``on_ready`` is called once the socket is bound, e.g. to print
    :attr:`SignalingServer.url` when ``port`` was 0.  ``web_root``: also serve
    the browser node's bundle from that directory (:class:`StaticFiles`).
    Shutdown closes every socket with 1001 so agents reconnect to the next
    server promptly.
    """
    asyncio.run(_run_until_signalled(host, port, tokens, settings, on_ready, web_root))


async def _run_until_signalled(
    host: str,
    port: int,
    tokens: Sequence[str | Verifier],
    settings: SignalingSettings | None,
    on_ready: Callable[[SignalingServer], None] | None,
    web_root: Path | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # non-Unix or not main thread
            pass
    server = SignalingServer(tokens, settings, host=host, port=port, web_root=web_root)
    try:
        await server.start()
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
        logger.info("signaling: signal received, shutting down")
    finally:
        await server.stop()
        for signum in installed:
            loop.remove_signal_handler(signum)
