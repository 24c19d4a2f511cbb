"""The handler side of the Services path: HTTP requests to one handler container of one pod.

A container that declares ``ports`` is an HTTP handler (issue 12). WASI preview 1 cannot
listen, so each request runs one instance of the module as a CGI script (RFC 3875, WAGI's
way): the request's meta-variables in its env (``cgi.cgi_environ``), the body on stdin, and
its stdout (``Launch.stdout``) parsed as it is written (``cgi.CgiResponseParser``) into a
head and streamed body chunks. stderr goes to the container's log, which every request
instance of the container shares (``logs.LogFiles``), so ``p2pkube logs POD`` shows handler
errors.

:class:`HandlerPool` is the kubelet's :class:`~p2pkube.services.types.RequestHandler` for
one such container. It bounds what a pod may cost:

* **concurrency**: at most ``concurrency`` instances at once (the pod annotation
  ``p2pkube.io/container-concurrency``, else ``services.container_concurrency``, as
  Knative's containerConcurrency); up to ``services.queue_size`` requests wait for a slot,
  within their deadline (504 if it passes first); beyond that a 503 with Retry-After that no
  handler saw (``reached_handler`` False), so a router may try another endpoint;
* **time**: ``services.request_deadline`` from the moment the pool takes the request (the
  wait for a slot counts), enforced by the runtime as any instance's deadline: 504 before
  the head, a cut-short body after it;
* **memory and CPU**: the container's limits apply to each request's instance;
* **response**: the header block (``services.max_response_header_bytes``) and body
  (``services.max_response_bytes``) are capped by the parser; and the stdout bytes written
  but not yet read are at most ``services.response_buffer_bytes`` (the Launch's
  ``stdout_buffer``). Writes arrive on the event loop. Natively that bound is backpressure:
  the runtime reads the instance's stdout pipe no further ahead of the reader than that, so
  the pipe fills and the instance's writes block (``runtime/pipes.py``: also across the
  process boundary of a request worker). In a browser tab the Worker's output arrives as it
  is written, so there it is a bounded buffer: a handler that writes faster than its client
  reads, for longer than the buffer, has its stream broken and its instance stopped
  (``StreamBroken``), as a proxy whose buffer limit is reached would (the tab's runtime may
  hold its Worker back sooner, at its output ring).

A request that fails never changes the pod's phase or readiness (a failed CGI script does not
take the server down); the pool counts it by reason (:meth:`HandlerPool.stats`).

Shared Python: it only uses the :class:`~p2pkube.runtime.interface.PodRuntime` seam, so the
browser node runs it over its Web Worker runtime unchanged. No wasmtime here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from p2pkube.runtime import interface as rt
from p2pkube.runtime.cgi import CgiError, CgiHead, CgiRequest, CgiResponseParser, cgi_environ
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import HttpError, ResponseHead, StreamBroken

if TYPE_CHECKING:
    from p2pkube.services.types import RequestHandler

log = logging.getLogger(__name__)

CONCURRENCY_ANNOTATION: Final = "p2pkube.io/container-concurrency"
MAX_CONCURRENCY: Final = 1000
"""The largest per-pod concurrency the annotation may ask for (each slot is a thread)."""

# Failure reasons counted besides the runtime's termination reasons (Trapped, OOMKilled, ...).
OVERLOADED: Final = "Overloaded"
QUEUE_TIMEOUT: Final = "QueueTimeout"
BAD_REQUEST: Final = "BadRequest"
MALFORMED_RESPONSE: Final = "MalformedResponse"
BUFFER_FULL: Final = "ResponseBufferFull"


def container_concurrency(annotations: Any, default: int) -> int:
    """The pod's ``p2pkube.io/container-concurrency`` if it is an integer from 1 to
    :data:`MAX_CONCURRENCY`, else ``default`` (an invalid value is logged, not fatal)."""
    if not isinstance(annotations, Mapping) or CONCURRENCY_ANNOTATION not in annotations:
        return default
    value = str(annotations[CONCURRENCY_ANNOTATION]).strip()
    if value.isdigit() and 1 <= int(value) <= MAX_CONCURRENCY:
        return int(value)
    log.warning(
        "annotation %s=%r is not an integer from 1 to %d; using %d",
        CONCURRENCY_ANNOTATION,
        value,
        MAX_CONCURRENCY,
        default,
    )
    return default


def _failure_message(termination: rt.Termination, deadline: float) -> tuple[int, str]:
    """(HTTP status, reason) for a request whose instance ended so before its head."""
    reason, message = termination.reason, termination.message
    if reason == rt.DEADLINE_EXCEEDED:
        return 504, f"handler did not answer within the request deadline ({deadline:g} s)"
    if reason in (rt.TRAPPED, rt.STACK_OVERFLOW):
        return 502, f"handler trapped: {message.removeprefix('wasm trap: ')}"
    if reason == rt.OOM_KILLED:
        return 502, f"handler ran out of memory: {message}"
    if reason in (rt.INVALID_MODULE, rt.CREATE_CONTAINER_ERROR):
        return 502, f"handler could not start: {message}"
    if reason == rt.ERROR:
        return 502, (
            f"handler exited with code {termination.exit_code} "
            "before the end of its response headers"
        )
    return 502, f"handler stopped ({reason}): {message}"


class HandlerResponse:
    """One request's instance and its response: a :class:`ResponseStream`.

    The instance's stdout arrives through :meth:`write`, on the event loop, and is parsed as
    it comes. Bytes written but not yet read are bounded by ``services.response_buffer_bytes``
    (see the module docstring: natively the runtime's reader holds back, in a tab a write past
    the bound breaks the stream)."""

    head: ResponseHead

    def __init__(self, pool: HandlerPool, deadline: float) -> None:
        settings = pool.settings
        self.pool = pool
        self.endpoint = pool.endpoint
        self.deadline = deadline
        self.instance: rt.Instance | None = None
        self.termination: rt.Termination | None = None
        self._parser = CgiResponseParser(
            max_header_bytes=settings.max_response_header_bytes,
            max_body_bytes=settings.max_response_bytes,
        )
        self._limit = settings.response_buffer_bytes
        self._chunk_bytes = settings.stream_chunk_bytes
        self._unread = 0  # stdout bytes written, neither consumed as header nor read yet
        self.peak_unread = 0
        """The most bytes ever written and not yet read (a test checks the bound)."""
        self._discard = False  # the stream failed or was closed: drop what comes
        self._head: CgiHead | None = None
        self._chunks: deque[bytes] = deque()
        self._error: HttpError | None = None
        """Why the request failed before its head (the 502/504 handle() raises)."""
        self._broken: str | None = None
        """Why the body ended early, after the head."""
        self._done = False
        self._closed = False
        self._changed = asyncio.Event()

    def write(self, data: bytes) -> None:
        """``Launch.stdout``, on the loop: take one write of the instance's stdout."""
        if self._discard:
            return
        if self._unread + len(data) > self._limit:
            self._fail(
                BUFFER_FULL,
                f"response body over {self._limit} bytes unread: the handler writes faster "
                "than the client reads",
            )
            return
        self._unread += len(data)
        self.peak_unread = max(self.peak_unread, self._unread)
        self._feed(data)
        self._changed.set()

    def started(self, instance: rt.Instance) -> None:
        self.instance = instance
        instance.done.add_done_callback(self._on_done)

    def _feed(self, data: bytes) -> None:
        try:
            events = self._parser.feed(data)
        except CgiError as exc:
            self._fail(MALFORMED_RESPONSE, exc.reason)
            return
        body = 0
        for event in events:
            if isinstance(event, CgiHead):
                self._head = event
                self.head = ResponseHead(event.status, event.reason, event.headers)
            else:
                self._chunks.append(event)
                body += len(event)
        self._consumed(len(data) - body)  # the header block is not kept

    def _consumed(self, size: int) -> None:
        """``size`` stdout bytes were read (or parsed as the header block): the runtime may
        let the instance write that much more."""
        self._unread -= size
        if size and self.instance is not None:
            self.instance.stdout_read(size)

    def _fail(self, reason: str, message: str, status: int = 502) -> None:
        """The request failed (before its head: ``status``; after: a broken stream); the
        instance is stopped and whatever it still writes is dropped."""
        if self._error is not None or self._broken is not None:
            return
        if self._head is None:
            self._error = HttpError(status, message, reached_handler=True)
        else:
            self._broken = message
        self.pool.count_failure(reason, message)
        self._stop(message)

    def fail_stopping(self, message: str) -> None:
        """The pod is stopping: fail the request (502 or a broken stream) and stop it."""
        self._fail(rt.KILLED, message)

    def _stop(self, message: str) -> None:
        self._discard = True
        if self.instance is not None and not self._done:
            self.instance.stop(rt.KILLED, message)
        self._changed.set()

    def _on_done(self, done: asyncio.Future[rt.Termination]) -> None:
        """The instance ended: settle the response, free the slot. Runs once: as the done
        callback, or earlier from :meth:`whole_body`."""
        if self._done:
            return
        self._done = True
        self.termination = termination = done.result()
        if self._error is None and self._broken is None and not self._closed:
            self._settle(termination)
        self._changed.set()
        self.pool.finished(self)

    def _settle(self, termination: rt.Termination) -> None:
        """What the end of the instance means for a response that had not failed yet."""
        deadline = self.pool.settings.request_deadline
        if termination.reason not in (rt.COMPLETED, rt.ERROR):
            status, message = _failure_message(termination, deadline)
            if self._head is not None:
                message = f"{message}; body cut short after {self._parser.body_bytes_sent} bytes"
            self._fail(termination.reason, message, status)
        elif self._head is None and termination.reason == rt.ERROR:
            self._fail(rt.ERROR, _failure_message(termination, deadline)[1])
        elif self._head is None:
            try:
                self._parser.close()
            except CgiError as exc:
                self._fail(MALFORMED_RESPONSE, exc.reason)
        elif termination.reason == rt.ERROR:
            # It answered, then exited non-zero: as with a CGI script the response stands,
            # and the pod's failures count it.
            self.pool.count_failure(rt.ERROR, f"handler exited with code {termination.exit_code}")

    async def wait_head(self) -> None:
        """Until the head is parsed; HttpError when the request failed before it."""
        while True:
            if self._error is not None:
                raise self._error
            if self._head is not None:
                return
            if self._done:  # cannot happen (settled on done), but never wait on nothing
                raise HttpError(502, "handler ended without a response", reached_handler=True)
            self._changed.clear()
            await self._wait_change()

    async def _wait_change(self) -> None:
        """Wait for the instance to write or end. The runtime stops it at its deadline; the
        timeout (the deadline plus the runtime's stop time) only guards against a runtime
        that lost an instance."""
        remaining = self.deadline - time.monotonic() + self.pool.stop_timeout
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                await self._changed.wait()
        except TimeoutError:
            self._fail(rt.DEADLINE_EXCEEDED, "handler ran past its deadline", 504)

    # -- ResponseStream ----------------------------------------------------------------------------
    async def read(self) -> bytes:
        """The next body chunk (at most ``services.stream_chunk_bytes``); ``b""`` at the end."""
        while True:
            if self._chunks:
                return self._take()
            if self._broken is not None:
                raise StreamBroken(self._broken)
            if self._done or self._closed:
                return b""
            self._changed.clear()
            await self._wait_change()

    def whole_body(self) -> bytes | None:
        """The rest of the body if the instance has ended and all of it is here (the front
        door then sends head and body in one write); None while more may come. Never waits.
        The instance's end may be known (its future resolved) before the done callback ran:
        it is settled here then, so that a small response need not wait a loop turn."""
        instance = self.instance
        if not self._done and instance is not None and instance.done.done():
            self._on_done(instance.done)
        if not self._done or self._broken is not None or self._closed:
            return None
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._consumed(len(body))
        return body

    def _take(self) -> bytes:
        """Pop up to one chunk's worth of body bytes (small writes joined, big ones split)."""
        parts: list[bytes] = []
        size = 0
        while self._chunks and size < self._chunk_bytes:
            chunk = self._chunks.popleft()
            room = self._chunk_bytes - size
            if len(chunk) > room:
                self._chunks.appendleft(chunk[room:])
                chunk = chunk[:room]
            parts.append(chunk)
            size += len(chunk)
        self._consumed(size)
        return b"".join(parts)

    async def aclose(self) -> None:
        """The reader is done (or gone): stop the instance if it still runs."""
        if self._closed:
            return
        self._closed = True
        self._chunks.clear()
        if not self._done:
            self._stop("the client closed the response")


class HandlerPool:
    """The :class:`~p2pkube.services.types.RequestHandler` of one handler container of one
    pod on this node: one instance per request, at most ``concurrency`` at once.

    ``template`` is the container's Launch as the kubelet builds it (image, module, argv,
    container env, memory and CPU limits, log path; ``limits.deadline`` is the pod's
    ``activeDeadlineSeconds`` instant or None). Each request's Launch is this one with the
    request's env, body, stdout receiver and deadline. ``on_failure(reason, message)`` is
    told of every failed request (the kubelet makes it a Warning event for ``describe pod``).
    """

    def __init__(
        self,
        runtime: rt.PodRuntime,
        template: rt.Launch,
        *,
        pod_name: str,
        pod_namespace: str,
        node_name: str,
        settings: ServiceSettings,
        concurrency: int | None = None,
        stop_timeout: float = 5.0,
        on_failure: Callable[[str, str], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.template = template
        self.pod_name = pod_name
        self.pod_namespace = pod_namespace
        self.node_name = node_name
        self.settings = settings
        self.concurrency = concurrency or settings.container_concurrency
        self.stop_timeout = stop_timeout
        self._on_failure = on_failure
        """``(reason, message)`` of each failed request (the kubelet records an event)."""
        self.endpoint = f"{node_name}/{pod_name}"
        self._container_env = dict(template.env)
        self._active = 0  # slots taken (an instance starting or running)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._running: set[HandlerResponse] = set()
        self._closed = False
        self.requests = 0
        """Requests that got an instance."""
        self.refused = 0
        self.failures: Counter[str] = Counter()

    # -- RequestHandler ----------------------------------------------------------------------------
    async def handle(self, request: CgiRequest, body: bytes) -> HandlerResponse:
        """Run one instance for ``request``; returns once its response head is parsed."""
        self._refuse_if_closed()
        deadline = time.monotonic() + self.settings.request_deadline
        try:
            env = cgi_environ(
                request,
                container_env=self._container_env,
                pod_name=self.pod_name,
                pod_namespace=self.pod_namespace,
                node_name=self.node_name,
            )
        except ValueError as exc:
            self.count_failure(BAD_REQUEST, "")  # the client's fault, not the handler's
            raise HttpError(400, f"bad request: {exc}") from None
        await self._acquire(deadline)
        response = HandlerResponse(self, deadline)
        try:
            instance = self.runtime.start(self._launch(env, body, deadline, response))
        except Exception as exc:  # the runtime refused at once: a bug or a closed runtime
            self._release()
            log.exception("pod %s/%s: a request instance did not start", *self._pod())
            raise HttpError(502, f"handler could not start: {exc}") from None
        self.requests += 1
        self._running.add(response)
        response.started(instance)
        try:
            await response.wait_head()
        except BaseException:  # a failed request, or the caller gave up (cancelled)
            await response.aclose()
            raise
        return response

    def _launch(
        self, env: dict[str, str], body: bytes, deadline: float, response: HandlerResponse
    ) -> rt.Launch:
        limits = self.template.limits
        if limits.deadline is not None:  # the pod's activeDeadlineSeconds comes first
            deadline = min(deadline, limits.deadline)
        return dataclasses.replace(
            self.template,
            env=list(env.items()),
            stdin=body or None,
            stdout=response.write,
            stdout_buffer=self.settings.response_buffer_bytes,
            limits=dataclasses.replace(limits, deadline=deadline),
        )

    def _pod(self) -> tuple[str, str]:
        return self.pod_namespace, self.pod_name

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise HttpError(
                503,
                f"pod {self.pod_namespace}/{self.pod_name} is stopping",
                retry_after=self.settings.retry_after,
            )

    # -- slots -------------------------------------------------------------------------------------
    async def _acquire(self, deadline: float) -> None:
        """Take a slot, waiting in the bounded queue at most until ``deadline``."""
        if self._active < self.concurrency and not self._waiters:
            self._active += 1
            return
        if len(self._waiters) >= self.settings.queue_size:
            self.refused += 1
            self.count_failure(OVERLOADED, "the pod's concurrency and queue are full (503)")
            raise HttpError(
                503,
                f"pod {self.pod_namespace}/{self.pod_name} is busy: {self._active} requests "
                f"running, {len(self._waiters)} queued",
                retry_after=self.settings.retry_after,
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await waiter
        except BaseException as exc:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif not waiter.cancelled() and waiter.exception() is None:
                self._release()  # a slot was handed over just as we gave up: pass it on
            if not isinstance(exc, TimeoutError):
                raise
            self.count_failure(QUEUE_TIMEOUT, "no free slot within the request deadline (504)")
            raise HttpError(
                504,
                f"no free slot in pod {self.pod_namespace}/{self.pod_name} within the request "
                f"deadline ({self.settings.request_deadline:g} s)",
            ) from None

    def _release(self) -> None:
        """Free one slot: hand it to the first waiter still waiting, else count it free."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active -= 1

    def finished(self, response: HandlerResponse) -> None:
        """A request's instance ended (called once per started instance)."""
        self._running.discard(response)
        self._release()

    def count_failure(self, reason: str, message: str) -> None:
        """Count a failed request; tell ``on_failure`` what failed (empty: nothing to report).
        Only the message's first clause is passed on (not "body cut short after N bytes"),
        so that the kubelet's events of one kind of failure aggregate into one."""
        self.failures[reason] += 1
        if message and self._on_failure is not None and not self._closed:  # not a stop's
            self._on_failure(reason, message.split(";", 1)[0])

    # -- lifecycle ---------------------------------------------------------------------------------
    async def close(self, message: str = "the pod is stopping") -> None:
        """Refuse new requests, fail the queued ones (503) and stop the running instances;
        wait for them at most ``stop_timeout``."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(
                    HttpError(
                        503,
                        f"pod {self.pod_namespace}/{self.pod_name} is stopping",
                        retry_after=self.settings.retry_after,
                    )
                )
        running = [r for r in self._running if r.instance is not None]
        for response in running:
            response.fail_stopping(f"handler stopped: {message}")
        instances = [r.instance for r in running if r.instance is not None]
        if instances:
            await asyncio.wait([i.done for i in instances], timeout=self.stop_timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, Any]:
        """Counters for status and ``describe``: requests, in flight, queued, failures."""
        return {
            "requests": self.requests,
            "inFlight": len(self._running),
            "queued": sum(1 for w in self._waiters if not w.done()),
            "refused": self.refused,
            "concurrency": self.concurrency,
            "failures": dict(self.failures),
        }


if TYPE_CHECKING:  # mypy checks that the pool fills the seam the router calls
    _SEAM: type[RequestHandler] = HandlerPool
