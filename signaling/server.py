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

Structure (one object per concern, aiortc style), one module each:

* :class:`~signaling.settings.SignalingSettings`: every limit and timing, with its default;
* :mod:`signaling.admission`: :class:`~signaling.admission.JoinThrottle` (failed joins
  per client address, a :class:`~p2pkube.pacing.TokenBucket` each) and the join's
  signature check; a session's rate limit is a token bucket too;
* :mod:`signaling.session`: :class:`~signaling.session.Session` (one WebSocket with its
  bounded outbox and writer task) and :class:`~signaling.session.Room` (the live
  sessions of one cluster);
* here, :class:`SignalingState`: verifiers, rooms and sessions; the WebSocket
  handler, admission and relaying;
* :class:`~signaling.static.StaticFiles`: optionally, the browser node's page and
  bundle (``web_root``, built by ``make browser``) from the same origin;
* here, :func:`create_app`, :class:`SignalingServer`, :func:`run_server`: the ways
  to run it (extend the app, embed in tests, or block in a CLI).

The wire format is p2pkube's (:mod:`p2pkube.net.signaling_wire`,
:mod:`p2pkube.net.jointoken`), shared with every node.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from p2pkube.net.jointoken import (
    KEY_BYTES,
    Verifier,
    join_mac,
    node_id_from_public_key,
)
from p2pkube.net.signaling_wire import (
    NONCE_BYTES,
    WS_PATH,
    ErrorCode,
    Join,
    PeerRecord,
    ProtocolError,
    Signal,
    challenge_message,
    parse_client_message,
    peer_joined_message,
    peer_left_message,
    signal_from_message,
    welcome_message,
)

from .admission import JoinThrottle, signature_valid
from .session import Room, Session
from .settings import SignalingSettings
from .static import StaticFiles

__all__ = [
    "STATE_KEY",
    "SignalingServer",
    "SignalingState",
    "create_app",
    "run_server",
]

logger = logging.getLogger(__name__)


def as_verifiers(credentials: Sequence[str | Verifier]) -> tuple[Verifier, ...]:
    """The verifiers of the clusters to serve: tokens are turned into theirs (and not kept)."""
    verifiers = (c if isinstance(c, Verifier) else Verifier.from_token(c) for c in credentials)
    return tuple(dict.fromkeys(verifiers))


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
        self.rooms: dict[str, Room] = {}
        self.sessions: set[Session] = set()
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
        session = Session(ws, request.transport, request.remote or "?", settings)
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

    async def _serve(self, session: Session) -> None:
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

    async def _admit(self, session: Session) -> bool:
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

    def _frame_text(self, session: Session, msg: WSMessage) -> str | None:
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

    def _join_failed(self, session: Session, code: ErrorCode, message: str) -> None:
        """Refuse a join: count it against the address, log it with the address, close."""
        self.throttle.failed(session.remote)
        logger.warning("signaling: failed join from %s: %s: %s", session.remote, code, message)
        session.fail(code, message, log=False)

    async def _refuse_throttled(self, session: Session) -> None:
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

    def _join(self, session: Session, join: Join, transcript: bytes) -> bool:
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
            room = self.rooms[room_id] = Room(room_id)
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

    def _relay(self, session: Session, message: Signal) -> None:
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

    def _leave(self, session: Session) -> None:
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
