"""The agent's client of the p2pkube signaling server.

An agent uses the signaling server for two things only: learning which peers
of its cluster are around (``welcome``, ``peer-joined``, ``peer-left``) and
exchanging WebRTC offers, answers and ICE candidates with one of them
(``signal``).  Once the WebRTC links are up, the cluster does not need the
server; so this client treats the server as something that comes and goes: it
reconnects forever with exponential backoff, re-announces itself, and
reconciles its view of present peers from the next ``welcome``.

It joins by challenge-response: the server's first message is a fresh nonce,
and the ``join`` answers it with a mac keyed by the signaling key derived from
the token and a signature by the node key whose id is our peer id.  The token
itself never leaves the process (the client does not even keep it, only the
signaling key), and nobody without our node key can join under our peer id.

Only a rejection on the very first attempt is an error the caller sees
(:class:`SignalingRejected` from :meth:`SignalingClient.start`, e.g. a wrong
join token, so the CLI can exit with the server's message); later problems are
logged and retried.  ``rate-limited`` at the join is never final (the server
throttles failed joins per address, and ours may share it with a guesser), and
``replaced`` (another socket joined with our node key: a copy of our data dir,
or a stolen key) is retried with a back-off that grows while it repeats, so two
holders of one key do not flap the room.

The wire format is defined in :mod:`p2pkube.net.signaling_wire` (and
``docs/protocol.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

from p2pkube.backoff import Backoff
from p2pkube.net.jointoken import check_token, cluster_id, join_mac, join_transcript, signaling_key
from p2pkube.net.keys import NodeKey
from p2pkube.net.settings import SignalingClientSettings
from p2pkube.net.signaling_wire import (
    WS_PATH,
    Challenge,
    ErrorCode,
    ErrorMessage,
    FlatValue,
    Join,
    PeerJoined,
    PeerLeft,
    ProtocolError,
    ServerMessage,
    SignalFrom,
    Welcome,
    encode,
    join_message,
    parse_server_message,
    signal_message,
    validate_name,
    validate_peer_id,
    validate_peer_kind,
    validate_signal_data,
)
from p2pkube.net.websocket import Connect, WebSocket

__all__ = [
    "PeerInfo",
    "SignalingClient",
    "SignalingRejected",
    "answer_challenge",
    "websocket_url",
]

logger = logging.getLogger(__name__)

#: Codes the server follows with a close; seen during the handshake they are
#: a rejection of this client, not a network problem.  (``rate-limited`` is
#: not among them: at the join it is the per-address throttle, which passes.)
_REJECTION_CODES = frozenset(
    {
        ErrorCode.BAD_TOKEN,
        ErrorCode.BAD_IDENTITY,
        ErrorCode.ROOM_FULL,
        ErrorCode.MALFORMED,
        ErrorCode.TOO_LARGE,
        ErrorCode.REPLACED,
        ErrorCode.JOIN_TIMEOUT,
    }
)


def websocket_url(url: str) -> str:
    """Return the WebSocket endpoint for a signaling server address.

    Operators type ``ws://host:port`` (or ``http://...``); the endpoint is
    ``/ws`` on that server.  ``http``/``https`` become ``ws``/``wss`` and an
    empty path becomes :data:`~p2pkube.net.signaling_wire.WS_PATH`; any other path is
    kept, for servers behind a reverse proxy.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url!r} is not a signaling URL (expected ws://HOST:PORT or wss://...)")
    path = parts.path if parts.path not in ("", "/") else WS_PATH
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, parts.query, ""))


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A peer present on the signaling server: its id, node name and kind.

    ``seen`` is when this client learned of the presence (``time.monotonic()``): a signal
    sent after it reaches that session of the peer, one sent before may have gone to an
    older one. It takes no part in comparisons (a welcome listing a known peer is no news).
    """

    peer: str
    name: str
    kind: str
    seen: float = field(default=0.0, compare=False)


class SignalingRejected(Exception):
    """The server refused us for good (bad token, room full, malformed, ...).

    ``code`` is the protocol's error code and ``message`` the server's
    explanation, fit to show to the operator as is.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"signaling server rejected us: {code}: {message}")
        self.code = code
        self.message = message


SignalCallback: TypeAlias = Callable[[str, dict[str, FlatValue]], Awaitable[None] | None]
PeerJoinedCallback: TypeAlias = Callable[[PeerInfo], Awaitable[None] | None]
PeerLeftCallback: TypeAlias = Callable[[str], Awaitable[None] | None]


#: A callback invocation waiting for the dispatcher: (label, callback, args).
_Event: TypeAlias = tuple[str, Callable[..., Any], tuple[Any, ...]]

#: What the client waits for from the server while joining.
_Reply = TypeVar("_Reply", Challenge, Welcome)


class SignalingClient:
    """One agent's connection to the signaling server, kept up forever.

    Callbacks may be plain functions or coroutines; they run one at a time in
    the order the server sent the events, in a dispatcher task of their own
    (so the socket is read and answers pings meanwhile), and an exception in
    one is logged and otherwise ignored.  ``on_peer_left`` means "left the signaling
    server", not "dead": during a server restart every peer leaves and comes
    back, so WebRTC links must not be torn down on it alone.
    """

    def __init__(
        self,
        url: str,
        token: str,
        identity: NodeKey,
        name: str,
        kind: str,
        on_signal: SignalCallback,
        on_peer_joined: PeerJoinedCallback,
        on_peer_left: PeerLeftCallback,
        settings: SignalingClientSettings | None = None,
        *,
        connect: Connect,
    ) -> None:
        """``identity`` is the node key: our peer id is its node id, and it signs each join.
        ``connect`` opens the WebSocket: the platform's (natively
        :func:`~p2pkube.net.aiohttp_websocket.aiohttp_connect`, the page's in a browser tab).
        ``ValueError`` for a token that is malformed or too short (with how to make one)."""
        check_token(token)
        try:
            validate_peer_id(identity.node_id)
            validate_name(name)
            validate_peer_kind(kind)
        except ProtocolError as exc:
            raise ValueError(exc.message) from None
        self.url = websocket_url(url)
        self.peer_id = identity.node_id
        self.name = name
        self.kind = kind
        self._identity = identity
        # Of the token, only what the join proof needs is kept.
        self._signaling_key = signaling_key(token)
        self._expected_cluster = cluster_id(token)
        self._on_signal = on_signal
        self._on_peer_joined = on_peer_joined
        self._on_peer_left = on_peer_left
        self._settings = settings or SignalingClientSettings()
        self._connect_socket = connect
        self._ws: WebSocket | None = None
        self._outbox: asyncio.Queue[str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._events: asyncio.Queue[_Event] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._peers: dict[str, PeerInfo] = {}
        self._cluster: str | None = None
        self._started = False
        self._closed = False
        self._replaced = False
        self.replaced_count = 0
        """Sessions that ended because another socket joined with our node key."""

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<SignalingClient {self.peer_id}/{self.name} {self.url} {state}>"

    # -- public API --------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while joined to the server (between ``welcome`` and a disconnect)."""
        return self._ws is not None and not self._ws.closed

    @property
    def peers(self) -> dict[str, PeerInfo]:
        """Peers present per the last ``welcome`` plus joins minus leaves (a copy)."""
        return dict(self._peers)

    @property
    def cluster(self) -> str | None:
        """The room id from the last ``welcome`` (None before the first one)."""
        return self._cluster

    async def start(self) -> None:
        """Connect and join; keep the connection up from then on.

        Raises :class:`SignalingRejected` if the server refuses us on this
        first attempt (e.g. ``bad-token``): retrying could not help.  If the
        server is merely unreachable, logs it and returns; an owned
        background task keeps trying with backoff.
        """
        if self._started or self._closed:
            raise RuntimeError("SignalingClient.start() called twice or after close()")
        self._started = True
        self._events = asyncio.Queue(self._settings.event_queue_size)
        self._dispatcher = asyncio.create_task(
            self._dispatch_loop(self._events), name=f"signaling-client-callbacks {self.peer_id}"
        )
        try:
            ws, welcome = await self._connect()
        except (SignalingRejected, asyncio.CancelledError):
            await self.close()
            raise
        except Exception as exc:
            logger.warning(
                "signaling: cannot reach %s (%s); retrying in the background",
                self.url,
                _describe(exc),
            )
            self._task = asyncio.create_task(self._run(None), name=self._task_name)
            return
        self._attach(ws)
        events = self._apply_welcome(welcome)
        self._task = asyncio.create_task(self._run(ws, events), name=self._task_name)

    async def send_signal(self, to: str, data: dict[str, FlatValue]) -> bool:
        """Queue ``data`` for peer ``to``; False if not connected or the queue is full.

        Raises ``ValueError`` if ``data`` is not a valid signal payload
        (``kind`` among offer/answer/candidate/bye, flat scalar values, within
        ``max_send_bytes``): sending it would get us disconnected.
        """
        try:
            validate_peer_id(to, field="to")
            validate_signal_data(data)
        except ProtocolError as exc:
            raise ValueError(exc.message) from None
        text = encode(signal_message(to, data))
        if len(text.encode("utf-8")) > self._settings.max_send_bytes:
            raise ValueError(f"signal exceeds {self._settings.max_send_bytes} bytes")
        outbox = self._outbox
        if not self.connected or outbox is None:
            return False
        try:
            outbox.put_nowait(text)
        except asyncio.QueueFull:
            logger.warning("signaling: send queue full, dropping a signal to %s", to)
            return False
        return True

    async def close(self) -> None:
        """Stop reconnecting, close the socket, release everything; idempotent.

        May be called from inside a callback: the callback then finishes at
        its next ``await``.
        """
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        run, self._task = self._task, None
        dispatcher, self._dispatcher = self._dispatcher, None
        tasks = {t for t in (run, dispatcher) if t is not None and t is not current}
        for task in tasks:
            task.cancel()
        if tasks:
            # The run task's cleanup closes the socket within close_timeout.
            await asyncio.wait(tasks, timeout=self._settings.close_timeout + 1.0)
        if self._ws is not None:
            await self._detach(self._ws)
        if current is not None and current is dispatcher:
            current.cancel()

    # -- connection lifecycle -------------------------------------------

    @property
    def _task_name(self) -> str:
        return f"signaling-client {self.peer_id}"

    async def _connect(self) -> tuple[WebSocket, Welcome]:
        """One attempt: open the socket, answer the ``challenge`` with a ``join``, read
        ``welcome``."""
        settings = self._settings
        ws: WebSocket | None = None
        try:
            async with asyncio.timeout(settings.connect_timeout):
                ws = await self._connect_socket(
                    self.url,
                    settings.heartbeat,
                    settings.max_receive_bytes,
                    settings.close_timeout,
                )
                challenge = self._server_reply(ws, await ws.receive_str(), Challenge)
                join = await self._join(challenge.nonce)
                await ws.send_str(encode(join_message(join)))
                welcome = self._server_reply(ws, await ws.receive_str(), Welcome)
            self._check_welcome(welcome)
        except BaseException:
            if ws is not None:
                await self._close_quietly(ws)
            raise
        return ws, welcome

    async def _join(self, nonce: bytes) -> Join:
        return await answer_challenge(
            nonce, self._signaling_key, self._expected_cluster, self._identity, self.name, self.kind
        )

    def _server_reply(self, ws: WebSocket, text: str | None, expected: type[_Reply]) -> _Reply:
        """The server's next message during the join, which must be of type ``expected``.

        A rejection raises :class:`SignalingRejected`; the join throttle
        (``rate-limited``), a close or anything else a ``ConnectionError``, which
        is retried.
        """
        if text is None:
            raise ConnectionError(f"server closed the connection (code {ws.close_code})")
        reply = parse_server_message(text)
        if isinstance(reply, ErrorMessage) and reply.code in _REJECTION_CODES:
            raise SignalingRejected(reply.code, reply.message)
        if isinstance(reply, ErrorMessage) and reply.code == ErrorCode.RATE_LIMITED:
            raise ConnectionError(f"the server throttles joins from here: {reply.message}")
        if not isinstance(reply, expected):
            wanted = expected.__name__.lower()
            raise ConnectionError(f"expected {wanted!r} from the server, got {reply!r}")
        return reply

    def _check_welcome(self, reply: Welcome) -> None:
        if reply.cluster != self._expected_cluster or reply.peer != self.peer_id:
            # A server that gets this wrong cannot be trusted to relay either.
            raise ConnectionError(
                f"server welcomed us to cluster {reply.cluster!r} as {reply.peer!r}; "
                f"expected {self._expected_cluster!r} as {self.peer_id!r}"
            )

    async def _run(self, ws: WebSocket | None, events: list[_Event] | None = None) -> None:
        """Owned background task: read, and reconnect with backoff, until closed."""
        reconnect = self._backoff()
        # Sessions in a row that ended in 'replaced': the first waits twice the first delay.
        settings = self._settings
        replaced = self._backoff(
            min(2 * settings.reconnect_initial_delay, settings.reconnect_max_delay)
        )
        events = events or []
        while not self._closed:
            if ws is None:
                try:
                    ws, welcome = await self._connect()
                except SignalingRejected as exc:
                    logger.error(
                        "signaling: %s rejected us: %s: %s; retrying",
                        self.url,
                        exc.code,
                        exc.message,
                    )
                except (OSError, TimeoutError, ProtocolError) as exc:
                    logger.info(
                        "signaling: cannot reach %s (%s); retrying", self.url, _describe(exc)
                    )
                except Exception:  # a bug must not end reconnection for good
                    logger.exception("signaling: unexpected error connecting; retrying")
                else:
                    self._attach(ws)
                    events = self._apply_welcome(welcome)
                    logger.info("signaling: reconnected to %s", self.url)
                if ws is None:
                    await asyncio.sleep(reconnect.next())
                    continue
            reconnect.reset()
            try:
                for event in events:
                    await self._emit(event)
                await self._read_loop(ws)
            except Exception:  # a bug must not end reconnection for good
                logger.exception("signaling: unexpected error; reconnecting")
            finally:
                await self._detach(ws)
            ws = None
            events = []
            delay = reconnect.next()
            if self._replaced:
                # Only a holder of our node key can do this; retrying, with a delay that
                # grows while it repeats, keeps us in the room without a tug of war.
                self._replaced = False
                self.replaced_count += 1
                delay = replaced.next()
                logger.error(
                    "signaling: another connection joined with our node key (%s); "
                    "reconnecting in %.1f s",
                    self.peer_id,
                    delay,
                )
            else:
                replaced.reset()
            if not self._closed:
                await asyncio.sleep(delay)

    def _backoff(self, initial: float | None = None) -> Backoff:
        """Reconnect delays: doubling to the maximum, each less a random ``reconnect_jitter``."""
        settings = self._settings
        return Backoff(
            settings.reconnect_initial_delay if initial is None else initial,
            settings.reconnect_max_delay,
            spread=(1.0, 1.0 - settings.reconnect_jitter),
        )

    def _attach(self, ws: WebSocket) -> None:
        """Make ``ws`` the live connection, with a fresh outbox and writer."""
        self._ws = ws
        outbox: asyncio.Queue[str] = asyncio.Queue(self._settings.send_queue_size)
        self._outbox = outbox
        self._writer = asyncio.create_task(
            self._write_loop(ws, outbox), name=f"signaling-client-writer {self.peer_id}"
        )

    async def _detach(self, ws: WebSocket) -> None:
        """Drop ``ws``: stop its writer (pending signals are stale) and close it."""
        if self._ws is ws:
            self._ws = None
            self._outbox = None
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        await self._close_quietly(ws)

    async def _close_quietly(self, ws: WebSocket) -> None:
        try:
            async with asyncio.timeout(self._settings.close_timeout + 1.0):
                await ws.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.debug("signaling: error closing socket: %s", _describe(exc))

    async def _write_loop(self, ws: WebSocket, outbox: asyncio.Queue[str]) -> None:
        try:
            while True:
                text = await outbox.get()
                async with asyncio.timeout(self._settings.send_timeout):
                    await ws.send_str(text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Closing ends the read loop, which reconnects.
            logger.info("signaling: send failed (%s); reconnecting", _describe(exc))
            await self._close_quietly(ws)

    async def _read_loop(self, ws: WebSocket) -> None:
        while True:
            try:
                text = await ws.receive_str()
            except ConnectionError as exc:
                logger.info("signaling: %s", _describe(exc))
                break
            if text is None:
                break
            try:
                message = parse_server_message(text)
            except ProtocolError as exc:
                logger.warning("signaling: ignoring bad message from server: %s", exc)
                continue
            await self._handle(message)
        logger.info("signaling: disconnected from %s (code %s)", self.url, ws.close_code)

    # -- message handling ---------------------------------------------------

    def _apply_welcome(self, welcome: Welcome) -> list[_Event]:
        """Replace the peer view with ``welcome``'s; return the differences.

        Peers gone while we were away produce ``left`` events, peers we did
        not know ``joined`` events, so callbacks stay in step with ``peers``.
        """
        self._cluster = welcome.cluster
        now = time.monotonic()
        fresh = {
            r.peer: PeerInfo(r.peer, r.name, r.kind, now)
            for r in welcome.peers
            if r.peer != self.peer_id
        }
        old = self._peers
        self._peers = fresh
        events: list[_Event] = [
            ("on_peer_left", self._on_peer_left, (pid,)) for pid in old if pid not in fresh
        ]
        events += [
            ("on_peer_joined", self._on_peer_joined, (info,))
            for pid, info in fresh.items()
            if old.get(pid) != info
        ]
        return events

    async def _handle(self, message: ServerMessage) -> None:
        if isinstance(message, SignalFrom):
            await self._emit(("on_signal", self._on_signal, (message.sender, message.data)))
        elif isinstance(message, PeerJoined):
            record = message.peer
            if record.peer == self.peer_id:
                return
            info = PeerInfo(record.peer, record.name, record.kind, time.monotonic())
            self._peers[info.peer] = info
            await self._emit(("on_peer_joined", self._on_peer_joined, (info,)))
        elif isinstance(message, PeerLeft):
            if self._peers.pop(message.peer, None) is not None:
                await self._emit(("on_peer_left", self._on_peer_left, (message.peer,)))
        elif isinstance(message, ErrorMessage):
            self._on_error(message)
        elif isinstance(message, Welcome):  # a second one: not in the protocol, but harmless
            for event in self._apply_welcome(message):
                await self._emit(event)
        else:  # a challenge after the join: not in the protocol
            logger.warning("signaling: ignoring an unexpected %s from the server", message)

    def _on_error(self, error: ErrorMessage) -> None:
        if error.code == ErrorCode.REPLACED:
            self._replaced = True
            logger.warning("signaling: replaced: %s", error.message)
        elif error.code == ErrorCode.UNKNOWN_PEER:
            logger.info("signaling: %s", error.message)
        elif error.code == ErrorCode.RATE_LIMITED:
            logger.warning("signaling: rate limited: %s", error.message)
        else:
            logger.error("signaling: server error %s: %s", error.code, error.message)

    async def _emit(self, event: _Event) -> None:
        """Hand an event to the dispatcher; waits only while its queue is full."""
        assert self._events is not None
        await self._events.put(event)

    async def _dispatch_loop(self, events: asyncio.Queue[_Event]) -> None:
        """Owned task: run callbacks one at a time, in the order of events."""
        while True:
            what, callback, args = await events.get()
            await self._call(what, callback, *args)

    async def _call(self, what: str, callback: Callable[..., Any], *args: Any) -> None:
        """Run a user callback (sync or async); log its failure, never raise it."""
        scope: asyncio.Timeout | None = None
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                scope = asyncio.timeout(self._settings.callback_timeout)
                async with scope:
                    await result
        except asyncio.CancelledError:
            raise
        except Exception:
            if scope is not None and scope.expired():
                logger.error(
                    "signaling: %s callback ran over %gs and was cancelled",
                    what,
                    self._settings.callback_timeout,
                )
            else:
                logger.exception("signaling: %s callback failed", what)


async def answer_challenge(
    nonce: bytes, key: bytes, cluster: str, identity: NodeKey, name: str, kind: str
) -> Join:
    """The ``join`` answering the server's challenge ``nonce``: the mac keyed by the signaling
    key ``key`` (:func:`~p2pkube.net.jointoken.signaling_key`), and the signature of the node key
    ``identity``, whose node id is the peer id, both over the join's transcript."""
    pub = identity.public_key
    transcript = join_transcript(nonce, cluster, identity.node_id, name, kind, pub)
    return Join(
        cluster=cluster,
        peer=identity.node_id,
        name=name,
        kind=kind,
        pub=pub,
        mac=join_mac(key, transcript),
        sig=await identity.sign(transcript),
    )


def _describe(exc: BaseException | object) -> str:
    """One-line description of an error for logs (no traceback)."""
    if isinstance(exc, BaseException):
        text = str(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return str(exc)
