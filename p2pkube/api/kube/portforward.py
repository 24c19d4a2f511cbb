"""``kubectl port-forward``'s server side: the pods/portforward subresource.

    GET|POST /api/v1/namespaces/NS/pods/NAME/portforward

kubectl 1.31+ first asks for a WebSocket with the subprotocol ``SPDY/3.1+portforward.k8s.io``
and tunnels a SPDY/3.1 session through its binary messages (client-go
``tools/portforward/tunneling_dialer.go``); when that upgrade fails, or with
``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``, it POSTs ``Upgrade: SPDY/3.1`` with
``X-Stream-Protocol-Version: portforward.k8s.io`` and speaks SPDY on the connection itself.
Both are served here, over the one session in ``spdy.py``.

In the session, kubectl opens two streams per local connection it accepts, both with the
headers ``port: N`` and ``requestid: K``: ``streamtype: error`` (which it half-closes at once
and reads to its end) and ``streamtype: data`` (the connection's bytes both ways). Like the
kubelet (``pkg/kubelet/cri/streaming/portforward/httpstream.go``) the :class:`PortForwarder`
pairs them by request id, then runs the injected :data:`PortServer` on the data stream; when
that fails, the message goes on the error stream, which kubectl prints and then ends the
whole port-forward ("lost connection to pod"), as it does for a refused TCP port. Both
streams are closed when the server returns, which is what ends kubectl's local connection.

p2pkube's pods are HTTP handlers, not TCP listeners, so the production :data:`PortServer`
is an HTTP/1.1 server on the data stream (``httpbridge.py``); any other byte service (a TCP
dial, a test echo) plugs in the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from p2pkube.api.kube.spdy import SpdySession, SpdySettings, SpdyStream
from p2pkube.api.status import problem_response

log = logging.getLogger(__name__)

PORTFORWARD_PATH = "/api/v1/namespaces/{namespace}/pods/{name}/portforward"
PROTOCOL = "portforward.k8s.io"
"""The one port-forward protocol (``X-Stream-Protocol-Version``)."""
TUNNEL_PREFIX = "SPDY/3.1+"
TUNNEL_PROTOCOL = TUNNEL_PREFIX + PROTOCOL
"""The WebSocket subprotocol of the SPDY tunnel."""

HEADER_PORT = "port"
HEADER_STREAM_TYPE = "streamtype"
HEADER_REQUEST_ID = "requestid"
STREAM_ERROR = "error"
STREAM_DATA = "data"


@dataclass(frozen=True)
class ForwardedPort:
    """One connection kubectl forwards: to which pod's port, and its request id."""

    namespace: str
    pod: str
    port: int
    request_id: str


class BytePipe(Protocol):
    """One forwarded connection's bytes, as a :data:`PortServer` sees them (a SPDY stream)."""

    async def read(self) -> bytes:
        """The next bytes from the client; ``b""`` once it closed its side."""
        ...

    async def write(self, data: bytes) -> None:
        """Send bytes to the client, waiting while the way there is full."""
        ...

    async def close(self) -> None:
        """No more bytes from us (the client's local connection then ends)."""
        ...

    def reset(self) -> None:
        """Abort the connection both ways."""
        ...


class PortRefused(Exception):
    """The port cannot be reached (no such pod or port): the message goes on the error
    stream, as a refused TCP connection's does in Kubernetes."""


PortServer = Callable[[ForwardedPort, BytePipe], Awaitable[None]]
"""Serves one forwarded connection until either side ends it; raises PortRefused (or any
exception) to have kubectl report the error."""

PodCheck = Callable[[str, str], Awaitable[str | None]]
"""``(namespace, pod)`` -> None when port-forward may start, else why not (answered 404
before any upgrade, as the API server does for a missing pod)."""


@dataclass
class PortForwardSettings:
    spdy: SpdySettings = field(default_factory=SpdySettings)
    stream_pair_timeout: float = 30.0
    """Seconds the second stream of a pair may take after the first (kubelet's
    streamCreationTimeout default); then the error stream says so."""
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest WebSocket message accepted (kubectl sends a few bytes to one frame each)."""
    read_buffer_bytes: int = 256 * 1024
    """Bytes an upgraded SPDY connection buffers before the socket is no longer read."""
    close_timeout: float = 5.0
    """Seconds :meth:`PortForwarder.close` gives each session to end."""


class PortForwarder:
    """The portforward subresource: one SPDY session per request, served until it ends.

    ``serve`` runs each forwarded connection; ``check_pod``, when given, refuses an unknown
    pod before upgrading. Mount :meth:`routes` on an application whose middleware has
    already authenticated the caller, and call :meth:`close` on shutdown.
    """

    def __init__(
        self,
        serve: PortServer,
        *,
        check_pod: PodCheck | None = None,
        settings: PortForwardSettings | None = None,
    ) -> None:
        self.serve = serve
        self.check_pod = check_pod
        self.settings = settings or PortForwardSettings()
        self._sessions: set[_PortForwardSession] = set()

    def routes(self) -> list[web.RouteDef]:
        return [web.get(PORTFORWARD_PATH, self.handle), web.post(PORTFORWARD_PATH, self.handle)]

    @property
    def sessions(self) -> int:
        """Sessions being served."""
        return len(self._sessions)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        namespace, pod = request.match_info["namespace"], request.match_info["name"]
        if self.check_pod is not None and (problem := await self.check_pod(namespace, pod)):
            return problem_response(404, problem)
        upgrade = request.headers.get("Upgrade", "").lower()
        if upgrade == "websocket":
            return await self._websocket(request, namespace, pod)
        if upgrade == "spdy/3.1":
            return await self._spdy(request, namespace, pod)
        return problem_response(
            400, "port-forward needs a WebSocket (SPDY/3.1+portforward.k8s.io) or SPDY/3.1 upgrade"
        )

    async def _websocket(
        self, request: web.Request, namespace: str, pod: str
    ) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            protocols=(TUNNEL_PROTOCOL,),
            max_msg_size=self.settings.max_message_bytes,
            autoclose=True,
            autoping=True,
        )
        ready = ws.can_prepare(request)
        if not ready.ok:
            return problem_response(400, "unable to upgrade: not a valid WebSocket handshake")
        if ready.protocol != TUNNEL_PROTOCOL:
            offered = request.headers.get("Sec-WebSocket-Protocol", "")
            return problem_response(
                400, f"unable to upgrade: no {TUNNEL_PROTOCOL} among the subprotocols {offered!r}"
            )
        await ws.prepare(request)
        await self._run(_WebSocketTransport(ws), request, namespace, pod)
        return ws

    async def _spdy(self, request: web.Request, namespace: str, pod: str) -> web.StreamResponse:
        offered = [
            p.strip()
            for value in request.headers.getall("X-Stream-Protocol-Version", [])
            for p in value.split(",")
        ]
        if PROTOCOL not in offered:
            return problem_response(
                403,
                f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                f"server supports {[PROTOCOL]}",
                reason="Forbidden",
            )
        transport = _UpgradedTransport.take_over(request, self.settings.read_buffer_bytes)
        response = web.StreamResponse(
            status=101,
            headers={
                "Connection": "Upgrade",
                "Upgrade": "SPDY/3.1",
                "X-Stream-Protocol-Version": PROTOCOL,
            },
        )
        response.force_close()
        await response.prepare(request)
        transport.response = response
        await self._run(transport, request, namespace, pod)
        return response

    async def _run(
        self,
        transport: _WebSocketTransport | _UpgradedTransport,
        request: web.Request,
        namespace: str,
        pod: str,
    ) -> None:
        name = f"port-forward {namespace}/{pod} from {request.remote}"
        session = _PortForwardSession(self, namespace, pod, transport, name)
        self._sessions.add(session)
        log.info("%s: started (%s)", name, type(transport).__name__.strip("_"))
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            log.info("%s: ended", name)

    async def close(self) -> None:
        """End every session (application shutdown)."""
        sessions = list(self._sessions)
        await asyncio.gather(*(session.close() for session in sessions))


# --- the session: pairing streams, running the port server ------------------------------------


@dataclass
class _StreamPair:
    request_id: str
    port: int
    data: SpdyStream | None = None
    error: SpdyStream | None = None
    timer: asyncio.TimerHandle | None = None


class _PortForwardSession:
    """One kubectl session: pairs its streams and owns one task per forwarded connection."""

    def __init__(
        self,
        forwarder: PortForwarder,
        namespace: str,
        pod: str,
        transport: _WebSocketTransport | _UpgradedTransport,
        name: str,
    ) -> None:
        self._forwarder = forwarder
        self._namespace = namespace
        self._pod = pod
        self._name = name
        self._pending: dict[str, _StreamPair] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.spdy = SpdySession(
            transport, accept=self._accept, settings=forwarder.settings.spdy, name=name
        )

    @property
    def tasks(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        try:
            await self.spdy.run()
        finally:
            for pair in self._pending.values():
                if pair.timer is not None:
                    pair.timer.cancel()
            self._pending.clear()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.spdy.aclose()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._forwarder.settings.close_timeout):
                await self.spdy.ended.wait()

    def _accept(self, stream: SpdyStream) -> bool:
        """Validate a new stream's headers (as the kubelet does) and pair it."""
        kind = stream.header(HEADER_STREAM_TYPE)
        port_text = stream.header(HEADER_PORT) or ""
        if kind not in (STREAM_ERROR, STREAM_DATA):
            log.info("%s: stream %d of type %r refused", self._name, stream.id, kind)
            return False
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            log.info("%s: stream %d for port %r refused", self._name, stream.id, port_text)
            return False
        request_id = stream.header(HEADER_REQUEST_ID)
        if request_id is None:  # kubectl before 1.6: pair by consecutive stream ids
            request_id = str(stream.id if kind == STREAM_ERROR else stream.id - 2)
        pair = self._pending.get(request_id)
        if pair is None:
            pair = self._pending[request_id] = _StreamPair(request_id, int(port_text))
            pair.timer = asyncio.get_running_loop().call_later(
                self._forwarder.settings.stream_pair_timeout, self._pair_timed_out, pair
            )
        if (kind == STREAM_DATA and pair.data) or (kind == STREAM_ERROR and pair.error):
            log.info("%s: request %s has two %s streams", self._name, request_id, kind)
            return False
        if kind == STREAM_DATA:
            pair.data = stream
        else:
            pair.error = stream
        if pair.data is not None and pair.error is not None:
            del self._pending[request_id]
            if pair.timer is not None:
                pair.timer.cancel()
            self._spawn(self._forward(pair, pair.data, pair.error))
        return True

    def _pair_timed_out(self, pair: _StreamPair) -> None:
        if self._pending.pop(pair.request_id, None) is None:
            return
        message = f"timed out waiting for the streams of request {pair.request_id}"
        log.info("%s: %s", self._name, message)
        if pair.error is not None:
            self._spawn(_report(pair.error, message))
        if pair.data is not None:
            pair.data.reset()

    def _spawn(self, job: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, pair: _StreamPair, data: SpdyStream, error: SpdyStream) -> None:
        """Run the port server on one connection; report its failure; close both streams,
        the error stream first (as the kubelet does), so kubectl has the error before the
        end of the data, which ends its local connection."""
        port = ForwardedPort(self._namespace, self._pod, pair.port, pair.request_id)
        message = ""
        try:
            try:
                await self._forwarder.serve(port, data)
            except PortRefused as exc:
                message = str(exc)
            except (ConnectionError, TimeoutError) as exc:
                log.debug("%s: connection %s ended: %r", self._name, port.request_id, exc)
            except Exception as exc:
                log.exception("%s: forwarding port %d failed", self._name, port.port)
                message = f"{type(exc).__name__}: {exc}"
            if message:
                where = f"{self._namespace}/{self._pod}"
                await _report(error, f"error forwarding port {port.port} to pod {where}: {message}")
            else:
                await error.close()
        finally:
            await data.close()


async def _report(error: SpdyStream, message: str) -> None:
    """Write ``message`` on an error stream and close it (kubectl reads it to its end)."""
    with contextlib.suppress(ConnectionError, TimeoutError):
        await error.write(message.encode())
    await error.close()


# --- the two transports -----------------------------------------------------------------------


class _WebSocketTransport:
    """SPDY bytes in binary WebSocket messages (client-go's TunnelingConnection): message
    boundaries mean nothing, spdystream writes one frame in several messages."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    async def read(self) -> bytes:
        while True:
            message = await self._ws.receive()
            if message.type == WSMsgType.BINARY:
                if message.data:  # an empty message is no end: skip it
                    return bytes(message.data)
            elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return b""
            elif message.type == WSMsgType.ERROR:
                raise ConnectionError(f"WebSocket error: {message.data}")
            else:
                raise ConnectionError(f"{message.type.name} message in a SPDY tunnel")

    async def write(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def close(self) -> None:
        await self._ws.close()


class _UpgradedTransport:
    """The connection of a ``101 Switching Protocols`` to SPDY/3.1.

    aiohttp upgrades only to WebSocket itself, so this takes the bytes after the request the
    way its WebSocket support does: as the connection's payload parser (``set_parser``). The
    parser buffers at most ``limit`` bytes, pausing the socket above that. Writes go through
    the 101 response, which aiohttp sends unframed.
    """

    def __init__(self, request: web.Request, limit: int) -> None:
        self._request = request
        self._limit = limit
        self._buffer = bytearray()
        self._eof = False
        self._readable = asyncio.Event()
        self._paused = False
        self.response: web.StreamResponse | None = None

    @classmethod
    def take_over(cls, request: web.Request, limit: int) -> _UpgradedTransport:
        """Claim the connection's next bytes before the 101 lets the client send any."""
        transport = cls(request, limit)
        protocol: Any = request.protocol  # set_parser: aiohttp's hook for upgraded streams
        protocol.set_parser(transport)
        protocol.keep_alive(False)
        return transport

    # aiohttp's payload parser interface
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._buffer += data
        self._readable.set()
        if len(self._buffer) > self._limit and not self._paused:
            self._pause(True)
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._readable.set()

    def _pause(self, paused: bool) -> None:
        transport = self._request.transport
        if transport is None or transport.is_closing():
            return
        self._paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    # ByteTransport
    async def read(self) -> bytes:
        while not self._buffer:
            if self._eof or self._request.transport is None:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._paused:
            self._pause(False)
        return data

    async def write(self, data: bytes) -> None:
        if self.response is None or self._request.transport is None:
            raise ConnectionResetError("the upgraded connection is closed")
        await self.response.write(data)

    async def close(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.close()
        self.feed_eof()
