"""``p2pkube logs``: a pod's logs, served by the node that ran it, over the mesh.

Logs stay on the node that ran the pod (they are big and mostly never read); the document says
which node that is (``spec.nodeName``). A request for a pod elsewhere is an rpc to that node,
through relays if it is not a neighbour. Following (``-f``) is a long poll: each call returns
the lines after a cursor, or waits up to ``follow_wait`` seconds for the next ones, and says
whether the container still runs, so the follower knows when to stop.

The cursor is (time of the last line seen, how many lines carried that very timestamp), so no
line is lost or repeated even when two lines share a nanosecond timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from p2pkube.net.rpc import Rpc, RpcError, RpcRemoteError
from p2pkube.runtime.interface import LogLine
from p2pkube.runtime.kubelet import Kubelet
from p2pkube.state import ClusterState, object_key
from p2pkube.state.store import OBJECTS

METHOD = "pods.logs"
MAX_REPLY_BYTES = 4 * 1024 * 1024
"""Text in one reply at most (below rpc.max_response_bytes); older lines are left out."""


class LogsUnavailable(LookupError):
    """The pod, its node or its container cannot be asked for logs; the message says why and
    ``status`` the HTTP code the local API answers with (404 absent, 400 bad request, 503 the
    node cannot be asked)."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


_RPC_CODES = {404: "not-found", 400: "bad-request"}


@dataclass(frozen=True)
class LogRequest:
    namespace: str
    name: str
    container: str | None = None
    previous: bool = False
    tail: int | None = None
    since: str | None = None
    skip: int = 0
    """Lines stamped exactly ``since`` that the caller already has."""
    wait: float = 0.0
    """Seconds to wait for a first new line (following), 0 to answer at once."""

    def body(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_body(cls, body: Any) -> LogRequest:
        if not isinstance(body, dict):
            raise ValueError("a logs request must be a map")
        try:
            request = cls(
                namespace=str(body["namespace"]),
                name=str(body["name"]),
                container=None if body.get("container") is None else str(body["container"]),
                previous=bool(body.get("previous", False)),
                tail=None if body.get("tail") is None else int(body["tail"]),
                since=None if body.get("since") is None else str(body["since"]),
                skip=int(body.get("skip", 0)),
                wait=min(max(float(body.get("wait", 0.0)), 0.0), 30.0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed logs request: {exc}") from None
        return request


def _after(lines: list[LogLine], since: str | None, skip: int) -> list[LogLine]:
    """The lines after the cursor (``read_log(since=...)`` keeps lines *at* since too)."""
    if since is None:
        return lines
    fresh = []
    for line in lines:
        if line.time == since and skip > 0:
            skip -= 1
            continue
        fresh.append(line)
    return fresh


def _trim(lines: list[LogLine]) -> tuple[list[LogLine], int]:
    """The newest lines that fit in a reply, and how many older ones were left out."""
    total = 0
    for index in range(len(lines) - 1, -1, -1):
        total += len(lines[index].text.encode()) + 48  # + time, stream and framing
        if total > MAX_REPLY_BYTES:
            return lines[index + 1 :], index + 1
    return lines, 0


@dataclass(frozen=True)
class LogReply:
    lines: list[LogLine]
    running: bool
    """The container still runs (a follower may wait for more)."""
    omitted: int = 0
    """Older lines left out to keep the reply under MAX_REPLY_BYTES."""


class PodLogs:
    """Reads a pod's logs from wherever it ran; answers other nodes' requests for ours."""

    def __init__(
        self,
        node_name: str,
        state: ClusterState,
        kubelet: Kubelet,
        rpc: Rpc,
        *,
        node_id_of: Callable[[str], str | None],
        call_timeout: float = 40.0,
    ) -> None:
        self.node_name = node_name
        self.state = state
        self.kubelet = kubelet
        self.rpc = rpc
        self.node_id_of = node_id_of
        self.call_timeout = call_timeout
        rpc.register(METHOD, self._serve)

    def _node_of(self, namespace: str, name: str) -> str:
        pod = self.state.get(OBJECTS, object_key("Pod", namespace, name))
        if not isinstance(pod, dict):
            raise LogsUnavailable(f'pods "{name}" not found')
        node = pod.get("spec", {}).get("nodeName")
        if not node:
            raise LogsUnavailable(f"pod {name} is not assigned to a node yet", 400)
        return str(node)

    async def read(self, request: LogRequest) -> LogReply:
        """The request's lines, from the pod's node (here, or over rpc)."""
        node = self._node_of(request.namespace, request.name)
        if node == self.node_name:
            return await self._local(request)
        node_id = self.node_id_of(node)
        if node_id is None:
            raise LogsUnavailable(f"node {node} of pod {request.name} is not known", 503)
        try:
            reply = await self.rpc.call(
                node_id, METHOD, request.body(), timeout=request.wait + self.call_timeout
            )
        except RpcRemoteError as exc:
            status = next((s for s, code in _RPC_CODES.items() if code == exc.code), 503)
            raise LogsUnavailable(
                exc.message if status != 503 else f"node {node}: {exc}", status
            ) from None
        except RpcError as exc:
            raise LogsUnavailable(f"node {node} cannot be asked: {exc}", 503) from None
        lines = [LogLine(*line) for line in reply.get("lines", [])]
        return LogReply(lines, bool(reply.get("running")), int(reply.get("omitted", 0)))

    async def follow(self, request: LogRequest, seconds: float) -> AsyncIterator[LogLine]:
        """The request's lines, then new ones until the container ends or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        cursor, skip = request.since, request.skip
        first = True
        while True:
            wait = 0.0 if first else min(10.0, max(0.0, deadline - time.monotonic()))
            step = LogRequest(
                request.namespace,
                request.name,
                request.container,
                tail=request.tail if first else None,
                since=cursor,
                skip=skip,
                wait=wait,
            )
            reply = await self.read(step)
            first = False
            lines, running = reply.lines, reply.running
            for line in lines:
                yield line
                skip = skip + 1 if line.time == cursor else 1
                cursor = line.time
            if (not running and not lines) or time.monotonic() >= deadline:
                return

    async def _local(self, request: LogRequest) -> LogReply:
        """Read on this node; with ``wait``, wait (bounded) for a first new line.

        The output waiter is registered before the first read and cleared before each one,
        so a line written between a read and the wait wakes the wait: none is missed."""
        kubelet = self.kubelet
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.wait
        try:
            with kubelet.runtime.output_waiter() as written:
                while True:
                    written.clear()
                    lines = await kubelet.logs(
                        request.namespace,
                        request.name,
                        request.container,
                        previous=request.previous,
                        tail=request.tail,
                        since=request.since,
                    )
                    lines = _after(lines, request.since, request.skip)
                    running = not request.previous and kubelet.running(
                        request.namespace, request.name, request.container
                    )
                    remaining = deadline - loop.time()
                    if lines or not running or remaining <= 0:
                        break
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await written.wait()
        except LookupError as exc:
            raise LogsUnavailable(str(exc).strip("'\""), 404) from None
        except ValueError as exc:
            raise LogsUnavailable(str(exc), 400) from None
        kept, omitted = _trim(lines)
        return LogReply(kept, running, omitted)

    async def _serve(self, _src: str, body: Any) -> dict[str, Any]:
        try:
            request = LogRequest.from_body(body)
            reply = await self._local(request)
        except ValueError as exc:
            raise RpcRemoteError("bad-request", str(exc)) from None
        except LogsUnavailable as exc:
            raise RpcRemoteError(_RPC_CODES.get(exc.status, "not-found"), exc.message) from None
        return {
            "lines": [[x.time, x.stream, x.text] for x in reply.lines],
            "running": reply.running,
            "omitted": reply.omitted,
        }
