"""Both ends of the request rpc (``wire.py``): serving other nodes' requests, and calling one.

:class:`StreamServer` answers ``svc.*`` calls for the handler pods of this node. Each request it
serves is a :class:`_Served` entry in a bounded table (``services.max_open_streams``, and
``max_open_streams_per_node`` per calling node), keyed by (calling node, stream id) so that one
node can touch only its own streams. An entry buffers the uploaded body, then runs the handler;
a pump task reads the handler's response into a small bounded buffer (a few chunks: the
handler is paced by its router's reads), which ``svc.read`` long-polls. An entry without a call
from its router for ``services.stream_idle_timeout`` is closed (its handler stopped), so a
router that vanished leaks nothing. Every task is owned and cancelled by :meth:`close`.

:func:`open_remote` is the caller's side: it sends the request, body chunk by chunk, and
returns a :class:`RemoteStream` whose ``read`` pulls the next chunks with ``svc.read``.
Failures become :class:`HttpError` with ``reached_handler`` telling the router whether a retry
on another endpoint is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from p2pkube.net.rpc import (
    Rpc,
    RpcBodyTooLarge,
    RpcBusy,
    RpcError,
    RpcRemoteError,
    RpcTimeout,
    RpcUnknownMethod,
    RpcUnreachable,
    counters,
)
from p2pkube.runtime.cgi import CgiRequest
from p2pkube.services import wire
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import (
    Endpoint,
    HttpError,
    RequestHandler,
    ResponseHead,
    ResponseStream,
    StreamBroken,
)
from p2pkube.ticker import sleep_to_beat

log = logging.getLogger(__name__)

HandlerLookup = Callable[[str, str, int], RequestHandler | None]
"""``(namespace, pod, containerPort) -> RequestHandler | None``: the kubelet's handler_for."""

WINDOW_CHUNKS = 4
"""Response chunks a served stream buffers ahead of its router's reads."""
CANCEL_TIMEOUT = 2.0
"""Seconds a ``svc.cancel`` (sent in the background) may take."""


@dataclass
class ServerStats:
    """Counters of the serving side, shown in ``p2pkube status`` under ``services.served``."""

    opened: int = 0
    completed: int = 0
    failed: int = 0
    refused_full: int = 0
    expired: int = 0
    cancelled: int = 0
    malformed: int = 0


class _Served:
    """One request served for a remote router: its upload, then its response."""

    def __init__(self, source: str, message: wire.OpenMessage) -> None:
        self.source = source
        self.open = message
        self.body = bytearray(message.chunk)
        self.next_seq = 1
        self.response: ResponseStream | None = None
        self.buffer = bytearray()
        self.ended = False
        self.broken: str | None = None
        self.changed = asyncio.Condition()
        self.pump: asyncio.Task[None] | None = None
        self.calls = 0
        """Calls for this stream in progress (the idle sweep skips it meanwhile)."""
        self.last_call = time.monotonic()

    def take(self, limit: int) -> bytes:
        chunk = bytes(self.buffer[:limit])
        del self.buffer[:limit]
        return chunk


class StreamServer:
    """Serves ``svc.open/body/read/cancel`` for this node's handler pods."""

    def __init__(self, rpc: Rpc, settings: ServiceSettings, handler_for: HandlerLookup) -> None:
        self.settings = settings
        self.stats = ServerStats()
        self._handler_for = handler_for
        self._streams: dict[tuple[str, str], _Served] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        rpc.register(wire.OPEN, self._on_open)
        rpc.register(wire.BODY, self._on_body)
        rpc.register(wire.READ, self._on_read)
        rpc.register(wire.CANCEL, self._on_cancel)
        rpc.register(wire.PING, self._on_ping)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="svc sweep")

    async def close(self) -> None:
        """Refuse new requests (``closing``: the caller tries another node) and stop the
        handlers of those still open."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for entry in list(self._streams.values()):
            await self._drop(entry)

    def stats_dict(self) -> dict[str, Any]:
        return {**counters(self.stats), "open": len(self._streams)}

    # -- rpc handlers --------------------------------------------------------------------------
    def _checked(self, source: str, read: Callable[[], Any]) -> Any:
        """A message read by ``read``; a malformed one is logged and answered bad-request."""
        try:
            return read()
        except wire.WireError as exc:
            self.stats.malformed += 1
            log.warning("malformed request rpc message from %s: %s", source, exc)
            raise RpcRemoteError(wire.BAD_REQUEST, str(exc)) from None

    async def _on_open(self, source: str, body: Any) -> dict[str, Any]:
        message: wire.OpenMessage = self._checked(
            source, lambda: wire.read_open(body, self.settings)
        )
        if self._closed:
            raise RpcRemoteError("closing", "the node is shutting down")
        key = (source, message.stream)
        if key in self._streams:
            raise RpcRemoteError(wire.BAD_REQUEST, f"stream {message.stream} is already open")
        mine = sum(1 for src, _ in self._streams if src == source)
        if (
            len(self._streams) >= self.settings.max_open_streams
            or mine >= self.settings.max_open_streams_per_node
        ):
            self.stats.refused_full += 1
            raise self._busy("too many requests in progress here")
        self._check_room(len(message.chunk))
        entry = _Served(source, message)
        self._streams[key] = entry
        self.stats.opened += 1
        if message.more:
            return {}
        return await self._call(entry, self._run(entry))

    async def _on_body(self, source: str, body: Any) -> dict[str, Any]:
        message: wire.BodyMessage = self._checked(
            source, lambda: wire.read_body(body, self.settings)
        )
        entry = self._entry(source, message.stream)
        return await self._call(entry, self._append(entry, message))

    async def _append(self, entry: _Served, message: wire.BodyMessage) -> dict[str, Any]:
        if entry.response is not None or message.seq != entry.next_seq:
            await self._drop(entry)
            raise RpcRemoteError(wire.BAD_REQUEST, f"chunk {message.seq} out of order")
        if len(entry.body) + len(message.chunk) > self.settings.max_request_body_bytes:
            await self._drop(entry)
            raise RpcRemoteError(wire.BAD_REQUEST, "request body over max_request_body_bytes")
        self._check_room(len(message.chunk))
        entry.body += message.chunk
        entry.next_seq += 1
        return await self._run(entry) if message.end else {}

    async def _on_read(self, source: str, body: Any) -> dict[str, Any]:
        stream: str = self._checked(source, lambda: wire.read_stream(body))
        entry = self._entry(source, stream)
        return await self._call(entry, self._read(entry))

    async def _on_cancel(self, source: str, body: Any) -> dict[str, Any]:
        stream: str = self._checked(source, lambda: wire.read_stream(body))
        entry = self._streams.get((source, stream))
        if entry is not None:
            self.stats.cancelled += 1
            await self._drop(entry)
        return {}

    @staticmethod
    async def _on_ping(_source: str, _body: Any) -> dict[str, Any]:
        """A router waiting on this node asks whether it is still there: yes."""
        return {}

    def _check_room(self, more: int) -> None:
        """Refuse (503) ``more`` body bytes beyond ``services.max_upload_bytes`` in all."""
        buffered = sum(len(entry.body) for entry in self._streams.values())
        if buffered + more > self.settings.max_upload_bytes:
            self.stats.refused_full += 1
            raise self._busy("too many request bodies buffered here")

    def _busy(self, message: str) -> RpcRemoteError:
        """A 503 with Retry-After that no handler saw (the router tries another node)."""
        return _answer(HttpError(503, message, retry_after=self.settings.retry_after))

    def _entry(self, source: str, stream: str) -> _Served:
        entry = self._streams.get((source, stream))
        if entry is None:
            raise RpcRemoteError(wire.GONE, f"no open stream {stream} (expired or cancelled)")
        return entry

    async def _call(
        self, entry: _Served, work: Coroutine[Any, Any, dict[str, Any]]
    ) -> dict[str, Any]:
        """Run one call's work for ``entry``, which the idle sweep leaves alone meanwhile."""
        entry.calls += 1
        entry.last_call = time.monotonic()
        try:
            return await work
        except BaseException:
            await self._drop(entry)
            raise
        finally:
            entry.calls -= 1
            entry.last_call = time.monotonic()

    # -- serving one request -------------------------------------------------------------------
    async def _run(self, entry: _Served) -> dict[str, Any]:
        """Run the handler on the whole body; the head answer (or an http-... error)."""
        message = entry.open
        request = message.request
        if request.content_length is not None and request.content_length != len(entry.body):
            raise RpcRemoteError(
                wire.BAD_REQUEST,
                f"body of {len(entry.body)} bytes, contentLength {request.content_length}",
            )
        handler = self._handler_for(message.namespace, message.pod, message.port)
        if handler is None:
            self.stats.failed += 1
            where = f"pod {message.namespace}/{message.pod}"
            raise _answer(HttpError(503, f"{where} serves no port {message.port} here"))
        try:
            async with asyncio.timeout(message.deadline):
                entry.response = await handler.handle(request, bytes(entry.body))
        except TimeoutError:
            self.stats.failed += 1
            late = HttpError(504, "the handler did not answer in time", reached_handler=True)
            raise _answer(late) from None
        except HttpError as exc:
            self.stats.failed += 1
            raise _answer(exc) from None
        entry.body = bytearray()
        head = entry.response.head
        entry.pump = asyncio.get_running_loop().create_task(
            self._pump(entry, entry.response), name=f"svc pump {message.stream}"
        )
        chunk, end = await self._next(entry, self.settings.first_chunk_wait, whole=True)
        return wire.head_answer(head, chunk, end)

    async def _pump(self, entry: _Served, response: ResponseStream) -> None:
        """Read the handler's body into the entry's buffer, at most WINDOW_CHUNKS ahead."""
        window = WINDOW_CHUNKS * self.settings.stream_chunk_bytes
        try:
            while True:
                async with entry.changed:
                    await entry.changed.wait_for(lambda: len(entry.buffer) < window)
                chunk = await response.read()
                async with entry.changed:
                    if chunk:
                        entry.buffer += chunk
                    else:
                        entry.ended = True
                    entry.changed.notify_all()
                if not chunk:
                    return
        except StreamBroken as exc:
            await self._broken(entry, str(exc) or "the handler's response ended early")
        except Exception as exc:
            log.exception("reading a handler's response for %s failed", entry.source)
            await self._broken(entry, f"{type(exc).__name__}: {exc}")

    @staticmethod
    async def _broken(entry: _Served, reason: str) -> None:
        async with entry.changed:
            entry.broken = reason
            entry.changed.notify_all()

    async def _next(self, entry: _Served, wait: float, *, whole: bool) -> tuple[bytes, bool]:
        """Up to one chunk from the buffer, waiting at most ``wait`` for one (``whole``: for a
        full chunk or the end). Raises ``broken`` once the buffer is drained after a failure."""
        size = self.settings.stream_chunk_bytes

        def ready() -> bool:
            if entry.ended or entry.broken is not None:
                return True
            return len(entry.buffer) >= size if whole else bool(entry.buffer)

        async with entry.changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await entry.changed.wait_for(ready)
            chunk = entry.take(size)
            entry.changed.notify_all()
        if entry.broken is not None and not entry.buffer:
            if not chunk:
                self.stats.failed += 1
                raise RpcRemoteError(wire.BROKEN, entry.broken)
            return chunk, False  # the next read reports the failure
        if entry.ended and not entry.buffer:
            self.stats.completed += 1
            await self._drop(entry)
            return chunk, True
        return chunk, False

    async def _read(self, entry: _Served) -> dict[str, Any]:
        if entry.response is None:
            raise RpcRemoteError(wire.BAD_REQUEST, "the request body is not complete yet")
        chunk, end = await self._next(entry, self.settings.poll_wait, whole=False)
        return wire.chunk_answer(chunk, end)

    async def _drop(self, entry: _Served) -> None:
        """Forget ``entry`` and stop its handler (idempotent)."""
        if self._streams.get((entry.source, entry.open.stream)) is entry:
            del self._streams[(entry.source, entry.open.stream)]
        pump, entry.pump = entry.pump, None
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        response, entry.response = entry.response, None
        if response is not None:
            try:
                await response.aclose()
            except Exception:
                log.exception("closing a handler's response failed")
        if not entry.ended and entry.broken is None:  # a read waiting on it answers now
            await self._broken(entry, "the request was cancelled or expired")

    async def _sweep(self) -> None:
        """Close the entries whose router has been silent for ``stream_idle_timeout``."""
        idle = self.settings.stream_idle_timeout
        while True:
            await sleep_to_beat(max(0.05, idle / 4))
            now = time.monotonic()
            for entry in list(self._streams.values()):
                if entry.calls == 0 and now - entry.last_call > idle:
                    self.stats.expired += 1
                    log.info("request stream %s of %s expired", entry.open.stream, entry.source)
                    await self._drop(entry)


def _answer(error: HttpError) -> RpcRemoteError:
    """The rpc error that carries ``error`` to the calling router (``wire.error_code``)."""
    return RpcRemoteError(wire.error_code(error), error.message)


# -- the calling side --------------------------------------------------------------------------
Spawn = Callable[[Coroutine[Any, Any, Any]], None]
"""Runs a small background job owned by the router (a ``svc.cancel``)."""


async def watched(
    work: Coroutine[Any, Any, Any], alive: Callable[[], bool], interval: float, lost: Exception
) -> Any:
    """``await work``, checking ``alive()`` every ``interval`` meanwhile: when it turns False
    the work is cancelled and ``lost`` raised (a node lost mid-request fails over now)."""
    task = asyncio.get_running_loop().create_task(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                return task.result()
            if not alive():
                raise lost
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class NodeFailure(HttpError):
    """The endpoint's node or the path to it failed (not the handler's own verdict): a router
    may retry an idempotent request elsewhere even if the handler may have seen it."""


def _failure(node: str, exc: RpcError) -> HttpError:
    """The HttpError for a failed call to ``node``; ``reached_handler`` is True unless the
    request surely never got to the handler."""
    if isinstance(exc, RpcUnreachable):
        return NodeFailure(503, f"node {node} is unreachable")
    if isinstance(exc, RpcBusy):
        return NodeFailure(503, f"node {node} is busy")
    if isinstance(exc, RpcBodyTooLarge):
        return HttpError(431, f"the request head is too large to forward to node {node}")
    if isinstance(exc, RpcTimeout):
        return NodeFailure(504, f"node {node} did not answer in time", reached_handler=True)
    if isinstance(exc, RpcRemoteError):
        error = wire.http_error(exc.code, exc.message)
        if error is not None:
            return error
        if isinstance(exc, RpcUnknownMethod) or exc.code == "closing":
            return NodeFailure(503, f"node {node} cannot serve requests: {exc.message}")
        return NodeFailure(502, f"node {node}: {exc.code}: {exc.message}", reached_handler=True)
    return NodeFailure(503, f"cannot call node {node}: {exc}")


class RemoteStream:
    """A response served by another node, read chunk by chunk with ``svc.read``."""

    def __init__(
        self,
        rpc: Rpc,
        endpoint: Endpoint,
        stream: str,
        answer: tuple[ResponseHead, bytes, bool],
        settings: ServiceSettings,
        spawn: Spawn,
        alive: Callable[[], bool],
    ) -> None:
        self.head, first, self._end = answer
        self._alive = alive
        self.endpoint = endpoint.key
        self._rpc = rpc
        self._node = endpoint.node_id
        self._stream = stream
        self._pending = first
        self._settings = settings
        self._spawn = spawn
        self._received = len(first)

    async def read(self) -> bytes:
        if self._pending:
            chunk, self._pending = self._pending, b""
            return chunk
        while not self._end:
            call = self._rpc.call(
                self._node,
                wire.READ,
                wire.stream_message(self._stream),
                timeout=self._settings.read_timeout,
            )
            lost = RpcUnreachable(f"node {self._node} was lost")
            try:
                answer = await watched(call, self._alive, self._settings.lost_check_interval, lost)
                chunk, self._end = wire.read_chunk_answer(answer, self._settings)
            except (RpcError, wire.WireError) as exc:
                self._abandon(cancel=not isinstance(exc, RpcRemoteError))
                raise StreamBroken(f"response from {self.endpoint} broken: {exc}") from None
            self._received += len(chunk)
            if self._received > self._settings.max_response_bytes:
                self._abandon(cancel=True)
                raise StreamBroken(f"response from {self.endpoint} over max_response_bytes")
            if chunk:
                return chunk
        return b""

    def whole_body(self) -> bytes | None:
        """The body when the first answer carried all of it (a small response)."""
        if not self._end:
            return None
        body, self._pending = self._pending, b""
        return body

    def _abandon(self, *, cancel: bool) -> None:
        if not self._end and cancel:
            self._spawn(_cancel(self._rpc, self._node, self._stream))
        self._end = True

    async def aclose(self) -> None:
        self._pending = b""
        self._abandon(cancel=True)


async def open_remote(
    rpc: Rpc,
    endpoint: Endpoint,
    request: CgiRequest,
    body: bytes,
    settings: ServiceSettings,
    *,
    deadline: float,
    spawn: Spawn,
    alive: Callable[[], bool],
) -> RemoteStream:
    """Send ``request`` to ``endpoint``'s node; the response once its head arrived.

    ``alive()`` says whether the node is still Ready and reachable (checked every
    ``services.lost_check_interval`` while waiting). Raises HttpError (``reached_handler``
    False only when the handler surely never saw it; a NodeFailure when the node or the
    path failed rather than the handler)."""
    lost = NodeFailure(
        502, f"node {endpoint.node} was lost before it answered", reached_handler=True
    )
    link = _Link(rpc, endpoint, settings, spawn)
    answer = await watched(
        _send(link, request, body, deadline), alive, settings.lost_check_interval, lost
    )
    stream, head = answer
    return RemoteStream(rpc, endpoint, stream, head, settings, spawn, alive)


@dataclass(frozen=True)
class _Link:
    """The way to one endpoint's node: what sending a request there and cancelling it use."""

    rpc: Rpc
    endpoint: Endpoint
    settings: ServiceSettings
    spawn: Spawn

    def cancel(self, stream: str) -> None:
        """Tell the node to drop ``stream`` (in the background: the caller is failing)."""
        self.spawn(_cancel(self.rpc, self.endpoint.node_id, stream))


async def _send(
    link: _Link, request: CgiRequest, body: bytes, deadline: float
) -> tuple[str, tuple[ResponseHead, bytes, bool]]:
    """The request's messages, the stream id and the head answer."""
    rpc, endpoint = link.rpc, link.endpoint
    stream = secrets.token_hex(8)
    size = link.settings.stream_chunk_bytes
    chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    if len(chunks[0]) + wire.head_size(request) > rpc.settings.max_request_bytes:
        chunks.insert(0, b"")  # big headers: the body follows the open, in svc.body chunks

    def left() -> float:
        return max(0.001, deadline - time.monotonic())

    try:
        message = wire.open_message(
            stream,
            endpoint.namespace,
            endpoint.pod,
            endpoint.port,
            request,
            chunks[0],
            more=len(chunks) > 1,
            deadline=left(),
        )
        answer = await rpc.call(endpoint.node_id, wire.OPEN, message, timeout=left() + 1.0)
        for seq, chunk in enumerate(chunks[1:], start=1):
            wire.read_ack(answer)
            message = wire.body_message(stream, seq, chunk, end=seq == len(chunks) - 1)
            answer = await rpc.call(endpoint.node_id, wire.BODY, message, timeout=left() + 1.0)
        head = wire.read_head_answer(answer, link.settings)
    except RpcError as exc:
        if not isinstance(exc, (RpcRemoteError, RpcUnreachable)):
            link.cancel(stream)  # the server may hold it: free it
        raise _failure(endpoint.node_id, exc) from None
    except asyncio.CancelledError:
        link.cancel(stream)
        raise
    except wire.WireError as exc:
        link.cancel(stream)
        error = HttpError(502, f"bad answer from {endpoint.key}: {exc}", reached_handler=True)
        raise error from None
    return stream, head


async def _cancel(rpc: Rpc, node: str, stream: str) -> None:
    with contextlib.suppress(RpcError):
        await rpc.call(node, wire.CANCEL, wire.stream_message(stream), timeout=CANCEL_TIMEOUT)
