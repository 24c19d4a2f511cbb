"""Request/response between any two nodes of the mesh, carried in routed ROUTE frames.

``Rpc`` turns the transport's one-way routed messages (``RoutedTransport.send_routed`` and the
``on_routed`` callback) into calls: ``await rpc.call(node, "blob.chunk", {...})`` sends a
request toward ``node`` (directly, or hop by hop along membership's routes) and waits for the
answer its handler returned. Everything is bounded: calls in flight, requests being handled per
source and in total (the excess is answered ``busy`` at once), body sizes, and every call and
handler has a timeout. Before sending, a request or answer waits (bounded) until the first link
toward its destination has drained below ``send_buffer_high``: a node serving large answers
paces itself to the path instead of queueing without limit.

No threads, no sockets: only the transport interface, so the browser node runs this same code.
The source node of each request is the transport's word: the mesh hands over only routed
messages whose signature by that source it checked (``mesh.py``), so the per-source limit
counts real nodes, not names a member made up.

Wire format (``data`` of a ROUTE frame; byte for byte in docs/protocol.md):

* request ``{kind: "rpc-req", id: int, method: str, body: bin}``
* answer  ``{kind: "rpc-res", id: int, ok: true, body: bin}`` or
  ``{kind: "rpc-res", id: int, ok: false, code: str, message: str}``

``body`` is the msgpack encoding of the argument or result, so its size is known without
re-encoding and it is decoded under this layer's own limits. A message that breaks this shape
raises ``FrameError`` from :meth:`Rpc.receive`: the mesh then drops a neighbour that sent it
itself, or logs and drops a message a relay passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

import msgpack

from p2pkube.net.frames import FrameError
from p2pkube.net.settings import RpcSettings
from p2pkube.net.transport import RoutedTransport

log = logging.getLogger(__name__)

__all__ = [
    "Handler",
    "Rpc",
    "RpcBodyTooLarge",
    "RpcBusy",
    "RpcError",
    "RpcOverloaded",
    "RpcRemoteError",
    "RpcTimeout",
    "RpcUnknownMethod",
    "RpcUnreachable",
    "counters",
]

REQUEST = "rpc-req"
RESPONSE = "rpc-res"
MAX_METHOD_LENGTH = 128
MAX_ID = 2**53 - 1
"""Ids stay below 2**53 so that a JavaScript peer reads them exactly."""

Handler = Callable[[str, Any], Awaitable[Any]]
"""``async handler(source_node_id, body) -> response body``; raise :class:`RpcRemoteError`
to answer with an error code of your own."""


class RpcError(Exception):
    """Base of every failure of :meth:`Rpc.call`."""


class RpcUnreachable(RpcError):
    """No path toward the node (not linked, no route known): failed without waiting."""


class RpcTimeout(RpcError):
    """No answer within the call's timeout (lost with a link, dropped by a relay, slow)."""


class RpcOverloaded(RpcError):
    """Too many of our own calls are waiting for answers (``rpc.max_pending_calls``)."""


class RpcBodyTooLarge(RpcError):
    """The request body exceeds ``rpc.max_request_bytes`` (nothing was sent)."""


class RpcRemoteError(RpcError):
    """The remote node answered with an error. Handlers raise it to answer with ``code``.

    Codes this layer uses: ``unknown-method``, ``busy``, ``too-large``, ``timeout``,
    ``internal``, ``closing``; handlers add their own (``not-found``, ``bad-request``...).
    """

    code = "error"

    def __init__(self, code: str, message: str, node: str = "") -> None:
        super().__init__(f"{node or 'remote'}: {code}: {message}")
        self.code = code
        self.message = message
        self.node = node


class RpcUnknownMethod(RpcRemoteError):
    """The remote node has no handler for the method."""


class RpcBusy(RpcRemoteError):
    """The remote node is handling too many requests (from us, or in total); retry later."""


_REMOTE_ERRORS: dict[str, type[RpcRemoteError]] = {
    "unknown-method": RpcUnknownMethod,
    "busy": RpcBusy,
}


@dataclass
class RpcStats:
    """Counters shown in ``p2pkube status`` under ``rpc``."""

    calls: int = 0
    calls_failed: int = 0
    timeouts: int = 0
    unreachable: int = 0
    requests_served: int = 0
    requests_failed: int = 0
    busy_refused: int = 0
    late_answers: int = 0
    malformed: int = 0


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def counters(stats: Any) -> dict[str, Any]:
    """A stats dataclass as the camelCase JSON ``/v1/status`` shows (``calls_failed`` ->
    ``callsFailed``); shared by every layer that reports counters."""
    out = {}
    for name, value in asdict(stats).items():
        first, *rest = name.split("_")
        out[first + "".join(part.title() for part in rest)] = value
    return out


class Rpc:
    """Calls to other nodes and the handlers that answer theirs (see the module docstring)."""

    def __init__(self, transport: RoutedTransport, settings: RpcSettings | None = None) -> None:
        self.settings = settings or RpcSettings()
        self.stats = RpcStats()
        self._transport = transport
        self._handlers: dict[str, Handler] = {}
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._next_id = random.randint(1, 2**31)
        self._active: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def register(self, method: str, handler: Handler) -> None:
        """Answer requests for ``method`` with ``handler`` (one handler per method)."""
        if not method or len(method) > MAX_METHOD_LENGTH:
            raise ValueError(f"method name must be 1-{MAX_METHOD_LENGTH} characters")
        if method in self._handlers:
            raise ValueError(f"a handler for {method!r} is already registered")
        self._handlers[method] = handler

    # -- calling -------------------------------------------------------------------------------
    async def call(
        self,
        node: str,
        method: str,
        body: Any = None,
        timeout: float | None = None,  # noqa: ASYNC109 - every call has its own deadline
    ) -> Any:
        """Call ``method`` on ``node`` and return its answer's body.

        Raises RpcUnreachable (no path, at once), RpcTimeout, RpcRemoteError (with the remote
        code and message; RpcUnknownMethod and RpcBusy are subclasses), RpcOverloaded or
        RpcBodyTooLarge (nothing sent).
        """
        if self._closed:
            raise RpcError("rpc is closed")
        if len(self._pending) >= self.settings.max_pending_calls:
            raise RpcOverloaded(f"{len(self._pending)} calls already wait for an answer")
        encoded = msgpack.packb(body, use_bin_type=True)
        if len(encoded) > self.settings.max_request_bytes:
            raise RpcBodyTooLarge(
                f"{method} request of {len(encoded)} bytes exceeds rpc.max_request_bytes "
                f"({self.settings.max_request_bytes})"
            )
        seconds = self.settings.call_timeout if timeout is None else timeout
        call_id = self._new_id()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = (node, future)
        self.stats.calls += 1
        try:
            async with asyncio.timeout(seconds):
                await self._paced(node)
                message = {"kind": REQUEST, "id": call_id, "method": method, "body": encoded}
                if not self._transport.send_routed(node, message):
                    self.stats.unreachable += 1
                    raise RpcUnreachable(f"no path to node {node}")
                return await future
        except TimeoutError:
            self.stats.timeouts += 1
            raise RpcTimeout(f"{method} to {node}: no answer within {seconds:g}s") from None
        except RpcError:
            self.stats.calls_failed += 1
            raise
        finally:
            self._pending.pop(call_id, None)

    def _new_id(self) -> int:
        self._next_id = self._next_id + 1 if self._next_id < MAX_ID else 1
        return self._next_id

    async def _paced(self, node: str) -> None:
        """Let the path toward ``node`` drain below ``send_buffer_high`` first (bounded)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.send_wait_timeout):
                await self._transport.wait_writable(node, self.settings.send_buffer_high)

    # -- receiving -----------------------------------------------------------------------------
    def receive(self, src: str, data: dict[str, Any]) -> None:
        """The transport's ``on_routed``: a request to serve or an answer to one of our calls.

        Raises FrameError for a message that is not valid rpc protocol (after counting it);
        unknown kinds (a newer peer's) are ignored.
        """
        kind = data.get("kind")
        try:
            if kind == REQUEST:
                self._on_request(src, data)
            elif kind == RESPONSE:
                self._on_response(src, data)
            else:
                log.debug("routed message of unknown kind %r from %s ignored", kind, src)
        except FrameError:
            self.stats.malformed += 1
            raise

    def _on_request(self, src: str, data: dict[str, Any]) -> None:
        call_id, method, body = data.get("id"), data.get("method"), data.get("body")
        if not _is_int(call_id) or not 0 < call_id <= MAX_ID:
            raise FrameError("rpc request id must be an int in 1..2**53-1")
        if not isinstance(method, str) or not 0 < len(method) <= MAX_METHOD_LENGTH:
            raise FrameError("rpc request method must be a string of 1-128 characters")
        if not isinstance(body, bytes):
            raise FrameError("rpc request body must be bin")
        if self._closed:
            self._answer_now(src, call_id, "closing", "the node is shutting down")
            return
        if len(body) > self.settings.max_request_bytes:
            self._answer_now(src, call_id, "too-large", f"request over {len(body)} bytes")
            return
        argument = self._decode(body, self.settings.max_request_bytes)
        handler = self._handlers.get(method)
        if handler is None:
            self._answer_now(src, call_id, "unknown-method", f"no method {method!r}")
            return
        active = self._active.get(src, 0)
        if active >= self.settings.max_requests_per_source or (
            len(self._tasks) >= self.settings.max_requests
        ):
            self.stats.busy_refused += 1
            self._answer_now(src, call_id, "busy", "too many requests in progress")
            return
        self._active[src] = active + 1
        task = asyncio.get_running_loop().create_task(
            self._serve(src, call_id, method, handler, argument), name=f"rpc {method} for {src}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_response(self, src: str, data: dict[str, Any]) -> None:
        call_id, ok = data.get("id"), data.get("ok")
        if not _is_int(call_id) or not isinstance(ok, bool):
            raise FrameError("rpc answer needs an int id and a bool ok")
        body, code, message = data.get("body"), data.get("code"), data.get("message")
        if ok and not isinstance(body, bytes):
            raise FrameError("rpc answer body must be bin")
        if not ok and (not isinstance(code, str) or not isinstance(message, str)):
            raise FrameError("rpc error answer needs string code and message")
        pending = self._pending.get(call_id)
        if pending is None or pending[0] != src or pending[1].done():
            # The call timed out or was cancelled meanwhile (or someone else's id): normal.
            self.stats.late_answers += 1
            return
        future = pending[1]
        if not ok:
            assert isinstance(code, str) and isinstance(message, str)  # checked above
            error = _REMOTE_ERRORS.get(code, RpcRemoteError)
            future.set_exception(error(code, message, src))
            return
        assert isinstance(body, bytes)  # checked above
        if len(body) > self.settings.max_response_bytes:
            future.set_exception(RpcError(f"answer of {len(body)} bytes from {src} is too large"))
        else:
            try:
                future.set_result(self._decode(body, self.settings.max_response_bytes))
            except FrameError as exc:
                future.set_exception(RpcError(f"undecodable answer from {src}: {exc}"))
                raise

    @staticmethod
    def _decode(body: bytes, limit: int) -> Any:
        try:
            return msgpack.unpackb(
                body,
                raw=False,
                strict_map_key=True,
                max_bin_len=limit,
                max_str_len=limit,
                max_array_len=limit,
                max_map_len=limit,
                max_ext_len=0,
            )
        except Exception as exc:  # msgpack raises several unrelated types on garbage
            raise FrameError(f"rpc body is not msgpack: {exc.__class__.__name__}") from None

    # -- serving -------------------------------------------------------------------------------
    async def _serve(
        self, src: str, call_id: int, method: str, handler: Handler, argument: Any
    ) -> None:
        try:
            message = await self._run_handler(src, method, handler, argument)
            message["id"] = call_id
            await self._paced(src)
            self._transport.send_routed(src, message)  # no path back: the caller times out
        finally:
            left = self._active.get(src, 1) - 1
            if left > 0:
                self._active[src] = left
            else:
                self._active.pop(src, None)

    async def _run_handler(
        self, src: str, method: str, handler: Handler, argument: Any
    ) -> dict[str, Any]:
        """The answer message (without id) for one request."""
        try:
            async with asyncio.timeout(self.settings.handler_timeout):
                result = await handler(src, argument)
            encoded = msgpack.packb(result, use_bin_type=True)
        except RpcRemoteError as exc:
            self.stats.requests_failed += 1
            return _error(exc.code, exc.message)
        except TimeoutError:
            self.stats.requests_failed += 1
            return _error("timeout", f"{method} took longer than {self.settings.handler_timeout}s")
        except Exception as exc:
            self.stats.requests_failed += 1
            log.exception("rpc handler %s failed for a request from %s", method, src)
            return _error("internal", f"{type(exc).__name__}: {exc}")
        if len(encoded) > self.settings.max_response_bytes:
            self.stats.requests_failed += 1
            return _error("too-large", f"answer of {len(encoded)} bytes exceeds the limit")
        self.stats.requests_served += 1
        return {"kind": RESPONSE, "ok": True, "body": encoded}

    def _answer_now(self, src: str, call_id: int, code: str, message: str) -> None:
        """An error answer that needs no handler (refusals): sent at once, never queued."""
        self.stats.requests_failed += 1
        self._transport.send_routed(src, {**_error(code, message), "id": call_id})

    # -- lifecycle -----------------------------------------------------------------------------
    async def close(self) -> None:
        """Cancel every handler and fail every call still waiting (``RpcError``)."""
        self._closed = True
        for _, future in list(self._pending.values()):
            if not future.done():
                future.set_exception(RpcError("rpc closed"))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*tasks, return_exceptions=True)

    def stats_dict(self) -> dict[str, Any]:
        return {
            **counters(self.stats),
            "pendingCalls": len(self._pending),
            "activeRequests": len(self._tasks),
        }


def _error(code: str, message: str) -> dict[str, Any]:
    return {"kind": RESPONSE, "ok": False, "code": code, "message": message[:1024]}
