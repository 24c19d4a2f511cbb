"""The native node's signaling WebSocket: :class:`~p2pkube.net.websocket.WebSocket` over
aiohttp.

The native agent passes :func:`aiohttp_connect` to its mesh (``p2pkube.agent``); the shared node
never imports this module, so a browser tab (which has no aiohttp) never loads it.
"""

from __future__ import annotations

import logging

import aiohttp

from p2pkube.net.websocket import WebSocket

__all__ = ["AiohttpWebSocket", "aiohttp_connect"]

log = logging.getLogger("p2pkube.net.websocket")


class AiohttpWebSocket:
    """:class:`WebSocket` over aiohttp, owning its client session."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws

    @property
    def closed(self) -> bool:
        return self._ws.closed

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def send_str(self, text: str) -> None:
        try:
            await self._ws.send_str(text)
        except aiohttp.ClientError as exc:
            raise ConnectionError(str(exc)) from exc

    async def receive_str(self) -> str | None:
        while True:
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                return str(msg.data)
            if msg.type == aiohttp.WSMsgType.ERROR:
                raise ConnectionError(f"connection error: {msg.data}")
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                return None
            log.warning("signaling: ignoring non-text frame from server")

    async def close(self) -> None:
        try:
            await self._ws.close()
        finally:
            await self._session.close()


async def aiohttp_connect(
    url: str, heartbeat: float, max_receive_bytes: int, close_timeout: float
) -> WebSocket:
    """Open ``url`` with aiohttp (pinging after ``heartbeat`` seconds of silence); the native
    :data:`~p2pkube.net.websocket.Connect`."""
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(
            url,
            heartbeat=heartbeat,
            max_msg_size=max_receive_bytes,
            timeout=aiohttp.ClientWSTimeout(ws_close=close_timeout),
            autoping=True,
        )
    except aiohttp.ClientError as exc:
        await session.close()
        raise ConnectionError(str(exc) or type(exc).__name__) from exc
    except BaseException:
        await session.close()
        raise
    return AiohttpWebSocket(session, ws)
