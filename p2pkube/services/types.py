"""What the parts of the Services path share: the request, the streamed response, the errors.

A request enters at a front door (a NodePort listener, the API's proxy path, ``port-forward``
or a tab's Service Worker), which parses HTTP and buffers the body (bounded). It becomes a
:class:`ServiceRequest`; the router (``services/router.py``) picks a ready endpoint and returns a
:class:`ResponseStream` whose head is known and whose body is read chunk by chunk as the handler
writes it, whether the handler runs on this node (``runtime/handler.py``) or another (the
request rpc, ``services/wire.py``). Anything that ends a request with an HTTP status of ours
(404 no such Service, 503 no endpoint, 502 bad handler output, 504 deadline) is an
:class:`HttpError`, which every front door answers the same way.

Pure standard library: the browser node imports it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from p2pkube.runtime.cgi import CgiRequest

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods a router may retry on another endpoint after the first failed mid-way (RFC 9110
§9.2.2): repeating them has the same effect as sending them once."""


class HttpError(Exception):
    """A request ends with an HTTP answer of the router's own; ``message`` is the body's text.

    ``retry_after`` (seconds) goes into a Retry-After header (503s). ``reached_handler`` says
    whether a handler may have seen the request: a router retries a non-idempotent request
    only when it did not.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after: int | None = None,
        reached_handler: bool = False,
    ) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.reached_handler = reached_handler


class StreamBroken(Exception):
    """The response body ended early (the handler failed, ran out of time, or its node went)
    after the head was sent: the front door can only cut the response short."""


@dataclass(frozen=True)
class ServiceTarget:
    """Where a request goes: a Service's port, or one pod's port (``port-forward pod/NAME``).

    ``port`` is what the user named: a Service port's name or number, or for a pod a
    containerPort's name or number; "" means the only (or first) port."""

    namespace: str
    name: str
    port: str = ""
    pod: bool = False


@dataclass(frozen=True)
class Endpoint:
    """One ready handler of a Service (or pod): which pod, on which node, on which port.

    Computed by every node from the replicated pods and their statuses
    (``services/endpoints.py``); never stored."""

    namespace: str
    pod: str
    node: str
    """The node's name (``spec.nodeName``)."""
    node_id: str
    """The node's id on the mesh (where the request rpc goes); "" if not known yet."""
    port: int
    """The containerPort the target resolves to on this pod."""
    ready: bool = True
    """False: listed in ``notReadyAddresses``, never routed to."""

    @property
    def key(self) -> str:
        """``node/pod`` as logs and the X-P2pkube-Endpoint header show it."""
        return f"{self.node}/{self.pod}"


@dataclass(frozen=True)
class ServiceRequest:
    """One HTTP request for a target, its body fully received (at most
    ``services.max_request_body_bytes``)."""

    target: ServiceTarget
    cgi: CgiRequest
    """Method, PATH_INFO, query, headers, remote address, server name and port as the
    handler's CGI env will show them (``content_length`` set when there is a body)."""
    body: bytes = b""
    trace: dict[str, str] = field(default_factory=dict)
    """Free-form facts for logs and errors (front door, client)."""


@dataclass(frozen=True)
class ResponseHead:
    """Status and headers of a response (framing and hop-by-hop headers already left out)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]


class ResponseStream(Protocol):
    """A response whose head has arrived; the body is read as the handler writes it."""

    head: ResponseHead
    endpoint: str
    """``node/pod`` that answered (for logs, the X-P2pkube-Endpoint header and tests)."""

    async def read(self) -> bytes:
        """The next body chunk; ``b""`` at the end. Raises StreamBroken if it ended early."""
        ...

    async def aclose(self) -> None:
        """Stop reading: release the handler (stop its instance if it still runs)."""
        ...

    def whole_body(self) -> bytes | None:
        """Never waits: the rest of the body when the response has ended and all of it is
        already here (the stream is then at its end), else None (more may come, or it
        broke). A front door sends a small response's head and body in one write with it,
        without making a streamed head wait for a chunk that is not there yet."""
        ...


class RequestHandler(Protocol):
    """Serves requests for one handler container of one pod on this node (the kubelet's
    side of the Services path; ``runtime/handler.py`` natively, the tab's runtime in a tab)."""

    async def handle(self, request: CgiRequest, body: bytes) -> ResponseStream:
        """Run one handler instance for ``request``; returns once the head is parsed.

        Raises HttpError: 503 (with Retry-After) when the pod's queue is full, 502 for a
        trap or malformed output before the head, 504 when the deadline passed first.
        """
        ...
