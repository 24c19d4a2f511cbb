"""The HTTP front doors of Services: one way from an aiohttp request to a Service and back.

Every way into a Service (a NodePort listener, the local API's ``.../proxy/PATH`` routes,
``p2pkube proxy``, ``p2pkube port-forward``) parses HTTP with aiohttp, turns the request into
a :class:`~p2pkube.services.types.ServiceRequest` here (:func:`read_request`: the body read
with a cap and a deadline), hands it to the router (:class:`ServiceOpener`, ``node.services``)
and answers with what comes back (:func:`answer`): the head, then each body chunk as the
handler writes it, or the router's :class:`~p2pkube.services.types.HttpError` as a short
text/plain answer. So a 404, a 503 with Retry-After or a cut-short body look the same whichever
door a client used.

Bad input harms nobody (:class:`FrontDoorServer`, used by the listeners this package opens):

- malformed HTTP -> 400 (aiohttp's parser);
- a request line or header field over ``services.max_request_header_bytes``, or more than
  ``services.max_request_headers`` fields -> 431 (aiohttp's C parser raises the same
  ``LineTooLong`` / "Too many headers" as for any bad message, answered 400 by aiohttp;
  :class:`_FrontDoorProtocol` maps those two to 431, RFC 6585 §5);
- a body over ``services.max_request_body_bytes`` -> 413 (before reading it when
  Content-Length says so), a body not received within ``services.body_timeout`` -> 408;
- a client that has not sent its whole request head within ``services.header_timeout`` of
  connecting (or of its previous response, on a kept-alive connection) is disconnected
  (slow loris). aiohttp has no header timeout of its own: its old ``slow_request_timeout`` went
  in 3.0, and only recent versions (3.12+, aio-libs/aiohttp#13681) start the keep-alive timer
  when a connection opens, while pyproject allows 3.9. So the protocol keeps a timer of its
  own, armed while no request is being handled. h11 would give the same control but a parser
  in Python, several times slower than aiohttp's C parser that the req/s target needs.

The local API's proxy routes run inside the API's own aiohttp application, which cannot swap
its protocol class: there, oversized heads answer aiohttp's 400 (same thresholds, set on the
API's runner) and the API keeps its own timeouts. It is a loopback, token-protected door.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, Protocol

from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from p2pkube.runtime.cgi import CgiRequest
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import (
    HttpError,
    ResponseStream,
    ServiceRequest,
    ServiceTarget,
    StreamBroken,
)

log = logging.getLogger(__name__)

ENDPOINT_HEADER = "X-P2pkube-Endpoint"
"""Names the ``node/pod`` that answered (debugging, tests; docs/cli.md)."""

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

_DROPPED_RESPONSE_HEADERS = frozenset({"transfer-encoding", "connection", "keep-alive"})
"""Framing of the link to the router, never copied onto the client's response."""


class ServiceOpener(Protocol):
    """The router as the front doors use it (``node.services``, ``services/router.py``)."""

    async def open(self, request: ServiceRequest) -> ResponseStream:
        """The response of a ready endpoint; raises HttpError (404, 503, 502, 504)."""
        ...


# --- request -> ServiceRequest ----------------------------------------------------------------


def cgi_request(
    request: web.BaseRequest, path: str, body: bytes | None, *, strip: frozenset[str] = frozenset()
) -> CgiRequest:
    """What the handler's CGI env shows of ``request``: ``path`` is PATH_INFO (decoded, below
    the door's prefix), the query raw, SERVER_NAME/PORT the listener's own address; headers
    named in ``strip`` (lower case) are left out."""
    sockname: Any = None
    if request.transport is not None:
        sockname = request.transport.get_extra_info("sockname")
    host, port = ("localhost", 80)
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = str(sockname[0]), int(sockname[1])
    return CgiRequest(
        method=request.method,
        path=path or "/",
        query=request.rel_url.raw_query_string,
        headers=tuple((k, v) for k, v in request.headers.items() if k.lower() not in strip),
        remote_addr=request.remote or "",
        server_name=host,
        server_port=port,
        protocol=f"HTTP/{request.version.major}.{request.version.minor}",
        content_length=None if body is None else len(body),
    )


async def read_body(request: web.BaseRequest, settings: ServiceSettings) -> bytes | None:
    """The whole request body (None when the request has none), at most
    ``max_request_body_bytes`` (HttpError 413) within ``body_timeout`` (HttpError 408)."""
    if not request.body_exists:
        return None
    cap = settings.max_request_body_bytes
    declared = request.content_length
    if declared is not None and declared > cap:
        raise HttpError(
            413, f"request body of {declared:,} bytes is over the {cap:,} bytes allowed"
        )
    if request.headers.get("Expect", "").lower() == "100-continue":
        # curl waits a second for this before sending a body over 1 KiB.
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(settings.body_timeout):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > cap:
                    raise HttpError(413, f"request body is over the {cap:,} bytes allowed")
                chunks.append(chunk)
    except TimeoutError:
        raise HttpError(
            408, f"request body not received within {settings.body_timeout:g} s"
        ) from None
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        # A bad chunk, as aiohttp's Python parser reports it (its C parser queues a 400 behind
        # the request instead, so the body never ends: 408 above).
        raise HttpError(400, "malformed request body: " + " ".join(str(exc).split())) from None
    return b"".join(chunks)


async def read_request(
    request: web.BaseRequest,
    target: ServiceTarget,
    path: str,
    settings: ServiceSettings,
    *,
    door: str,
    strip: frozenset[str] = frozenset(),
) -> ServiceRequest:
    """``request`` for ``target`` with its body; raises HttpError (413, 408, 400)."""
    body = await read_body(request, settings)
    try:
        cgi = cgi_request(request, path, body, strip=strip)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    return ServiceRequest(
        target=target,
        cgi=cgi,
        body=body or b"",
        trace={"door": door, "client": request.remote or ""},
    )


# --- ResponseStream / HttpError -> response ---------------------------------------------------


def error_response(exc: HttpError) -> web.Response:
    """The answer to a request the router (or the door) ended with an HttpError."""
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    try:
        reason = HTTPStatus(exc.status).phrase
    except ValueError:
        reason = "Error"
    response = web.Response(
        status=exc.status,
        reason=reason,
        text=exc.message.rstrip("\n") + "\n",
        content_type="text/plain",
        headers=headers,
    )
    if exc.status in (408, 413):
        response.force_close()  # the rest of the body is still on the wire: do not parse it
    return response


class _WholeResponse(web.StreamResponse):
    """A response whose body is all here: its head waits for the body (one socket write,
    one GIL round trip less per write) instead of being sent at ``prepare``."""

    _send_headers_immediately = False


async def stream_response(request: web.BaseRequest, stream: ResponseStream) -> web.StreamResponse:
    """Send ``stream``'s head, then its body chunk by chunk as the handler writes it.

    A body that breaks off (StreamBroken) cuts the connection short: the client sees a
    truncated response (a missing last chunk or a short Content-Length), never a complete
    one. The stream is always closed, also when the client went away mid-way.
    """
    head = stream.head
    whole = stream.whole_body() if request.method != "HEAD" else None
    kind = web.StreamResponse if whole is None else _WholeResponse
    response = kind(status=head.status, reason=head.reason or None)
    for name, value in head.headers:
        if name.lower() not in _DROPPED_RESPONSE_HEADERS:
            response.headers.add(name, value)
    response.headers[ENDPOINT_HEADER] = stream.endpoint
    try:
        if whole is not None:
            if hdrs.CONTENT_LENGTH not in response.headers:
                response.content_length = len(whole)
            await response.prepare(request)
            await response.write_eof(whole)  # head and body in one write
            return response
        await response.prepare(request)
        if request.method != "HEAD":
            while chunk := await stream.read():
                await response.write(chunk)
        await response.write_eof()
    except StreamBroken as exc:
        log.info(
            "%s %s: response from %s broke off: %s",
            request.method,
            request.path,
            stream.endpoint,
            exc,
        )
        _cut(request)
    except ConnectionError:
        log.debug("%s %s: the client went away", request.method, request.path)
    finally:
        await stream.aclose()
    return response


def _cut(request: web.BaseRequest) -> None:
    """Abort the connection so the client cannot take a partial body for a whole one."""
    if request.transport is not None:
        request.transport.abort()


async def serve(
    request: web.BaseRequest,
    opener: ServiceOpener,
    target: ServiceTarget,
    path: str,
    settings: ServiceSettings,
    *,
    door: str,
    strip: frozenset[str] = frozenset(),
) -> web.StreamResponse:
    """One request through a front door: read it, open it on the router, answer it.
    ``strip``: request headers the handler must not see (the API's token)."""
    try:
        service_request = await read_request(
            request, target, path, settings, door=door, strip=strip
        )
        stream = await opener.open(service_request)
    except HttpError as exc:
        return error_response(exc)
    return await stream_response(request, stream)


# --- the listener -----------------------------------------------------------------------------


def _error_status(status: int, exc: BaseException | None) -> int:
    """431 for the parser's size limits (aiohttp says 400 for every malformed head)."""
    if isinstance(exc, LineTooLong):
        return 431
    if isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message:
        return 431
    return status


class _FrontDoorProtocol(RequestHandler):
    """aiohttp's protocol with a header timeout and 431 for oversized heads (module doc)."""

    def __init__(
        self, manager: web.Server, *, header_timeout: float, limits: str, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._limits = limits
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.await_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.head_received()
        super().connection_lost(exc)

    def await_head(self) -> None:
        """(Re)start the header timer: the next request head must come in time."""
        self.head_received()
        self._head_timer = asyncio.get_running_loop().call_later(
            self._header_timeout, self._head_too_late
        )

    def head_received(self) -> None:
        """A request is being handled: no timer while it runs (the body has its own)."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_late(self) -> None:
        self._head_timer = None
        log.debug("front door: no request head within %.1f s; disconnecting", self._header_timeout)
        self.force_close()
        if self.transport is not None:
            self.transport.close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        status = _error_status(status, exc)
        if status == 500:
            return super().handle_error(request, status, exc, message)
        # A hostile client must not fill the log: one debug line, a short answer, close.
        log.debug("front door: bad request from %s: %s", request.remote, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        text = HTTPStatus(status).phrase
        if status == 431:
            text = f"{text}: {self._limits}"
        elif isinstance(exc, BadHttpMessage):
            text = f"{text}: {exc.message}"
        response = web.Response(status=status, text=text + "\n", content_type="text/plain")
        response.force_close()
        return response


class FrontDoorServer(web.Server):
    """aiohttp's low-level server with the front door's protocol and limits."""

    def __init__(self, handler: Handler, settings: ServiceSettings) -> None:
        super().__init__(
            self._timed(handler),
            max_line_size=settings.max_request_header_bytes,
            max_field_size=settings.max_request_header_bytes,
            max_headers=settings.max_request_headers,
            handler_cancellation=True,  # a client gone mid-request cancels it (aclose)
            access_log=None,  # a line per request would cost more than the request
        )
        self._header_timeout = settings.header_timeout
        self._limits = (
            f"a request line or header field over {settings.max_request_header_bytes:,} "
            f"bytes, or over {settings.max_request_headers} header fields"
        )

    def __call__(self) -> RequestHandler:
        return _FrontDoorProtocol(
            self,
            loop=self._loop,
            header_timeout=self._header_timeout,
            limits=self._limits,
            **self._kwargs,
        )

    @staticmethod
    def _timed(handler: Handler) -> Handler:
        async def timed(request: web.BaseRequest) -> web.StreamResponse:
            protocol = request.protocol
            if isinstance(protocol, _FrontDoorProtocol):
                protocol.head_received()
            try:
                return await handler(request)
            finally:
                if isinstance(protocol, _FrontDoorProtocol) and protocol.transport is not None:
                    protocol.await_head()

        return timed


async def listen(runner: web.BaseRunner, host: str, port: int) -> int:
    """Set ``runner`` up and listen on ``host:port`` (0: a free port); the port it got.
    On failure (OSError when the address is taken or not this host's) the runner is cleaned
    up before the error goes to the caller, so nothing is left half-started."""
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return int(runner.addresses[0][1])


class HttpListener:
    """One front door listening on ``host:port`` until :meth:`stop`."""

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        settings: ServiceSettings,
        *,
        shutdown_timeout: float = 2.0,
    ) -> None:
        self.host = host
        self.port = port
        self._server = FrontDoorServer(handler, settings)
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.ServerRunner | None = None

    async def start(self) -> None:
        """Listen (OSError when the address is taken or not this host's)."""
        runner = web.ServerRunner(
            self._server,
            handle_signals=False,
            shutdown_timeout=self._shutdown_timeout,
        )
        self.port = await listen(runner, self.host, self.port)
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and close its connections (requests in flight get the shutdown
        timeout to finish)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            async with asyncio.timeout(self._shutdown_timeout + 5):
                await runner.cleanup()
