"""The signaling client's WebSocket in a tab: the page's own, through ``p2pjs.openSocket``.

Browsers answer the server's pings themselves, so there is no client heartbeat here: a dead
server shows as the socket's close, after which the client reconnects as natively.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import p2pjs  # type: ignore[import-not-found]  # bridge.js, registered by the page
from pyodide.ffi import JsException  # type: ignore[import-not-found]  # Pyodide, in a tab only

from p2pkube.net.websocket import WebSocket

log = logging.getLogger(__name__)

MAX_QUEUED = 1024
"""Messages received and not yet read; more closes the socket (the reader is stuck)."""


class BrowserWebSocket:
    """:class:`~p2pkube.net.websocket.WebSocket` over a page WebSocket."""

    def __init__(self) -> None:
        self._socket: Any = None
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._close_code: int | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_code(self) -> int | None:
        return self._close_code

    def _on_message(self, text: Any) -> None:
        if len(self._queue) >= MAX_QUEUED:
            log.warning("signaling: %d messages unread; closing the socket", MAX_QUEUED)
            self._socket.close(1000, "reader too slow")
            self._on_close(1000, "reader too slow")
            return
        self._queue.append(str(text))
        self._ready.set()

    def _on_close(self, code: Any = None, reason: Any = None) -> None:
        self._closed = True
        self._close_code = int(code) if code is not None else None
        self._ready.set()

    async def send_str(self, text: str) -> None:
        if self._closed or not self._socket.send(text):
            raise ConnectionError("the signaling socket is closed")

    async def receive_str(self) -> str | None:
        while not self._queue:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    async def close(self) -> None:
        if not self._closed and self._socket is not None:
            self._socket.close(1000, "")
        self._on_close(self._close_code or 1000)


async def browser_connect(
    url: str, heartbeat: float, max_receive_bytes: int, close_timeout: float
) -> WebSocket:
    """A :data:`~p2pkube.net.websocket.Connect` over ``p2pjs.openSocket``."""
    socket = BrowserWebSocket()
    try:
        socket._socket = await p2pjs.openSocket(
            url, socket._on_message, socket._on_close, int(close_timeout * 5000)
        )
    except JsException as exc:
        raise ConnectionError(str(exc)) from None
    return socket
