"""HTTP/1.1 on a forwarded connection: what a pod "listens" with under ``kubectl port-forward``.

A p2pkube pod is a WebAssembly HTTP handler, not a TCP server, so the bytes kubectl forwards
to its port are served here as HTTP/1.1 and each request goes the way every other front door
sends it (``api/frontdoor.py``): a :class:`~p2pkube.services.types.ServiceRequest` for the
pod's port, handed to the router (:class:`~p2pkube.api.frontdoor.ServiceOpener`), the answer
streamed back as the handler writes it.

Rather than a second HTTP/1.1 implementation, the front door's own server
(:class:`~p2pkube.api.frontdoor.FrontDoorServer`: aiohttp's C parser, keep-alive, chunked
bodies, 100-continue, the 431/413/408 limits and the header timeout) runs on the forwarded
bytes: :class:`PipeTransport` is an asyncio transport over a :class:`BytePipe`, so aiohttp's
protocol serves a SPDY stream exactly as it serves a socket, with the same backpressure both
ways (``pause_reading`` stops reading the stream, ``pause_writing`` above ``high_water``
queued bytes makes aiohttp wait). So a request through ``kubectl port-forward`` behaves as one
to a NodePort, byte for byte, save the ``door`` named in traces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from p2pkube.api.frontdoor import FrontDoorServer, Handler, ServiceOpener, serve
from p2pkube.api.kube.portforward import BytePipe, ForwardedPort, PortRefused, PortServer
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import Endpoint, HttpError, ServiceTarget

log = logging.getLogger(__name__)

DEFAULT_HIGH_WATER = 64 * 1024
"""Bytes aiohttp may have written that the stream has not taken before it must wait."""


class PipeTransport(asyncio.Transport):
    """An asyncio transport over a :class:`BytePipe`, for a protocol that wants a socket.

    Owns two tasks: one reads the pipe into ``protocol.data_received`` (stopped while the
    protocol has paused reading), one moves written bytes to the pipe. ``close`` flushes,
    then closes the pipe's sending side; ``abort`` resets it. Either way
    ``protocol.connection_lost`` is called once, and :meth:`wait_closed` returns. The tasks
    wait without timeouts of their own: the protocol's (aiohttp's header, body and keep-alive
    timers) and the pipe's (the SPDY session's) bound every wait, and end them by closing.
    """

    def __init__(
        self,
        pipe: BytePipe,
        protocol: asyncio.Protocol,
        *,
        extra: dict[str, Any] | None = None,
        high_water: int = DEFAULT_HIGH_WATER,
    ) -> None:
        super().__init__(extra)
        self._pipe = pipe
        self._protocol = protocol
        self._high = high_water
        self._low = high_water // 4
        self._buffer = bytearray()
        self._has_data = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._writing_paused = False
        self._closing = False
        self._lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """``protocol.connection_made``, then start moving bytes."""
        self._protocol.connection_made(self)
        self._tasks = [
            asyncio.create_task(self._pump_in(), name="pipe transport reader"),
            asyncio.create_task(self._pump_out(), name="pipe transport writer"),
        ]

    async def wait_closed(self) -> None:
        await self._lost.wait()

    # -- reading -------------------------------------------------------------------------------

    async def _pump_in(self) -> None:
        try:
            while not self._closing:
                await self._reading.wait()
                data = await self._pipe.read()
                if self._closing:
                    return
                if not data:
                    if not self._protocol.eof_received():
                        self.close()
                    return
                self._protocol.data_received(data)
        except (ConnectionError, TimeoutError) as exc:
            self._connection_lost(exc)

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set() and not self._closing

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._buffer += data
        self._has_data.set()
        if len(self._buffer) > self._high and not self._writing_paused:
            self._writing_paused = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    async def _pump_out(self) -> None:
        try:
            while True:
                await self._has_data.wait()
                if not self._buffer:
                    if self._closing:
                        break
                    self._has_data.clear()
                    continue
                data = bytes(self._buffer)
                self._buffer.clear()
                await self._pipe.write(data)
                if self._writing_paused and len(self._buffer) <= self._low:
                    self._writing_paused = False
                    self._protocol.resume_writing()
            await self._pipe.close()
            self._connection_lost(None)
        except (ConnectionError, TimeoutError) as exc:
            self._connection_lost(exc)

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = DEFAULT_HIGH_WATER if high is None else high
        self._low = self._high // 4 if low is None else low

    def can_write_eof(self) -> bool:
        return False

    # -- ending --------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Flush what was written, then close the pipe's sending side."""
        if self._closing:
            return
        self._closing = True
        self._reading.set()
        self._has_data.set()
        for task in self._tasks[:1]:
            if task is not asyncio.current_task():
                task.cancel()

    def abort(self) -> None:
        self._pipe.reset()
        self._connection_lost(None)

    def _connection_lost(self, exc: Exception | None) -> None:
        """The end, whichever way it came: stop both tasks, tell the protocol once."""
        if self._lost.is_set():
            return
        self._closing = True
        self._lost.set()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if exc is not None:
            self._pipe.reset()
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, exc)

    async def aclose(self) -> None:
        """Abort (if still open) and wait for both tasks to end."""
        if not self._lost.is_set():
            self.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)


HandlerFor = Callable[[ForwardedPort], Handler]
"""The aiohttp-style handler that answers the requests of one forwarded connection."""

PortCheck = Callable[[ForwardedPort], Awaitable[str | None]]
"""None when the port can be served, else why not (PortRefused, on kubectl's error stream)."""


class HttpBridge:
    """A :data:`~p2pkube.api.kube.portforward.PortServer` serving HTTP/1.1 on each
    forwarded connection through the front door (module docstring)."""

    def __init__(
        self,
        handler_for: HandlerFor,
        settings: ServiceSettings | None = None,
        *,
        check: PortCheck | None = None,
        high_water: int = DEFAULT_HIGH_WATER,
        shutdown_timeout: float = 2.0,
    ) -> None:
        self.handler_for = handler_for
        self.settings = settings or ServiceSettings()
        self.check = check
        self.high_water = high_water
        self.shutdown_timeout = shutdown_timeout

    async def __call__(self, port: ForwardedPort, pipe: BytePipe) -> None:
        """Serve one forwarded connection until the client or the server ends it."""
        if self.check is not None and (problem := await self.check(port)):
            raise PortRefused(problem)
        server = FrontDoorServer(self.handler_for(port), self.settings)
        extra = {
            # What the pod sees, as in Kubernetes where the kubelet dials localhost:PORT in
            # the pod's network namespace: SERVER_NAME/PORT, REMOTE_ADDR.
            "sockname": ("127.0.0.1", port.port),
            "peername": ("127.0.0.1", 0),
        }
        transport = PipeTransport(pipe, server(), extra=extra, high_water=self.high_water)
        transport.start()
        try:
            await transport.wait_closed()
        finally:
            await transport.aclose()
            with contextlib.suppress(TimeoutError):
                await server.shutdown(self.shutdown_timeout)


def pod_handler_for(opener: ServiceOpener, settings: ServiceSettings) -> HandlerFor:
    """Each request to the pod's port through the router, as ``.../pods/NAME:PORT/proxy``
    does: the pod's own handler answers (never another pod of a Service)."""

    def handler_for(port: ForwardedPort) -> Handler:
        target = ServiceTarget(port.namespace, port.pod, str(port.port), pod=True)
        door = f"port-forward {port.namespace}/{port.pod}:{port.port}"

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return await serve(request, opener, target, request.path, settings, door=door)

        return handle

    return handler_for


class EndpointTable(Protocol):
    """The router's endpoint lookup (``ServiceRouter.endpoints``)."""

    def endpoints(self, target: ServiceTarget) -> list[Endpoint]:
        """The target's usable endpoints; HttpError 404 for an unknown pod or port."""
        ...


def router_check(router: EndpointTable) -> PortCheck:
    """Refuse a port the pod does not declare (or a pod that is gone), as a TCP connection
    to it would be refused; a pod that exists but is not ready yet is let through (its
    requests then get the router's 503, as through any door)."""

    async def check(port: ForwardedPort) -> str | None:
        try:
            router.endpoints(ServiceTarget(port.namespace, port.pod, str(port.port), pod=True))
        except HttpError as exc:
            return exc.message
        return None

    return check


def service_port_server(
    opener: ServiceOpener,
    settings: ServiceSettings | None = None,
    *,
    check: PortCheck | None = None,
) -> PortServer:
    """The production port server: HTTP on each connection, to the pod's handler."""
    settings = settings or ServiceSettings()
    return HttpBridge(pod_handler_for(opener, settings), settings, check=check)
